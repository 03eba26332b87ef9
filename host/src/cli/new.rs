//! `cronwerk new --lang rust|python|js|c NAME`: scaffolds a task project
//! that builds outside this repository with nothing but its language's
//! public package registry (for C, Debian's clang and rustup's
//! wasm-component-ld), so a first task is minutes away. The templates are
//! compiled into the binary, with the contract (`wit/task.wit`) the binary
//! itself implements, so a scaffolded project always matches its host.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::exit;
use crate::model::validate_identifier;

/// The contract, byte for byte as this host was built against it.
const TASK_WIT: &str = include_str!("../../../wit/task.wit");

const RUST_CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.tmpl");
const RUST_LIB_RS: &str = include_str!("templates/rust/lib.rs");
const RUST_README: &str = include_str!("templates/rust/README.md");
const RUST_GITIGNORE: &str = include_str!("templates/rust/gitignore");
/// Cases for `cronwerk test`, the same for every language (the templates'
/// tasks behave alike).
const CASES_TOML: &str = include_str!("templates/common/cases.toml");
/// The Rust SDK (`guest-sdk/`), copied into each new Rust project so it
/// builds outside this repository: the same source the examples use.
const RUST_SDK_CARGO_TOML: &str = include_str!("templates/rust/sdk-Cargo.toml.tmpl");
const RUST_SDK: [(&str, &str); 12] = [
    (
        "cronwerk-guest/src/lib.rs",
        include_str!("../../../guest-sdk/src/lib.rs"),
    ),
    (
        "cronwerk-guest/src/cancellation.rs",
        include_str!("../../../guest-sdk/src/cancellation.rs"),
    ),
    (
        "cronwerk-guest/src/config.rs",
        include_str!("../../../guest-sdk/src/config.rs"),
    ),
    (
        "cronwerk-guest/src/context.rs",
        include_str!("../../../guest-sdk/src/context.rs"),
    ),
    (
        "cronwerk-guest/src/error.rs",
        include_str!("../../../guest-sdk/src/error.rs"),
    ),
    (
        "cronwerk-guest/src/farm.rs",
        include_str!("../../../guest-sdk/src/farm.rs"),
    ),
    (
        "cronwerk-guest/src/host.rs",
        include_str!("../../../guest-sdk/src/host.rs"),
    ),
    (
        "cronwerk-guest/src/testing.rs",
        include_str!("../../../guest-sdk/src/testing.rs"),
    ),
    (
        "cronwerk-guest/src/info.rs",
        include_str!("../../../guest-sdk/src/info.rs"),
    ),
    (
        "cronwerk-guest/src/instance.rs",
        include_str!("../../../guest-sdk/src/instance.rs"),
    ),
    (
        "cronwerk-guest/src/log.rs",
        include_str!("../../../guest-sdk/src/log.rs"),
    ),
    (
        "cronwerk-guest/src/state.rs",
        include_str!("../../../guest-sdk/src/state.rs"),
    ),
];

const PYTHON_APP: &str = include_str!("templates/python/app.py");
const PYTHON_REQUIREMENTS: &str = include_str!("templates/python/requirements.txt");
const PYTHON_README: &str = include_str!("templates/python/README.md");
const PYTHON_GITIGNORE: &str = include_str!("templates/python/gitignore");
const PYTHON_TEST_KIT: &str = include_str!("templates/python/tests/cronwerk_testing.py");
const PYTHON_CONFTEST: &str = include_str!("templates/python/tests/conftest.py");
const PYTHON_TESTS: &str = include_str!("templates/python/tests/test_app.py");

const C_TASK: &str = include_str!("templates/c/task.c");
const C_MAKEFILE: &str = include_str!("templates/c/Makefile");
const C_README: &str = include_str!("templates/c/README.md");
const C_GITIGNORE: &str = include_str!("templates/c/gitignore");
/// The C bindings kept in `guest-c/bindings` (generated from the contract
/// by wit-bindgen; `cargo xtask test` checks they are current), so a C
/// project builds without wit-bindgen.
const C_BINDINGS: [(&str, &str); 2] = [
    (
        "bindings/scheduled_task.c",
        include_str!("../../../guest-c/bindings/scheduled_task.c"),
    ),
    (
        "bindings/scheduled_task.h",
        include_str!("../../../guest-c/bindings/scheduled_task.h"),
    ),
];
/// The world's component type, a WebAssembly object file the linker reads.
const C_COMPONENT_TYPE: (&str, &[u8]) = (
    "bindings/scheduled_task_component_type.o",
    include_bytes!("../../../guest-c/bindings/scheduled_task_component_type.o"),
);

const JS_TASK: &str = include_str!("templates/js/task.js");
const JS_PACKAGE_JSON: &str = include_str!("templates/js/package.json");
const JS_README: &str = include_str!("templates/js/README.md");
const JS_GITIGNORE: &str = include_str!("templates/js/gitignore");
const JS_TEST_KIT: &str = include_str!("templates/js/testing/cronwerk-testing.js");
const JS_TEST_HOOKS: &str = include_str!("templates/js/testing/hooks.js");
const JS_TEST_REGISTER: &str = include_str!("templates/js/testing/register.js");
const JS_TESTS: &str = include_str!("templates/js/task.test.js");
/// The lock the JavaScript example is built and tested from: the template
/// pins the same builder, so it gets the same, known-good dependency tree.
const JS_EXAMPLE_LOCK: &str = include_str!("../../../example-tasks/cache-warmup/package-lock.json");
/// The project name in [`JS_EXAMPLE_LOCK`], replaced by the new one.
const JS_EXAMPLE_NAME: &str = "cache-warmup";

#[derive(Args)]
pub struct NewArgs {
    /// The project's name: lowercase letters, digits and '-', e.g. disk-report.
    /// Also the folder's and the component file's name.
    name: String,
    /// The language to write the task in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The identifier configurations refer to [default: Acme.<Name>, e.g.
    /// Acme.DiskReport]; use your company's prefix.
    #[arg(long)]
    identifier: Option<String>,
    /// The folder to create [default: ./NAME]; it must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    #[value(alias = "py")]
    Python,
    #[value(alias = "javascript")]
    Js,
    C,
}

/// What a template is filled in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub lang: Lang,
    /// Package and file name, e.g. `disk-report`.
    pub name: String,
    /// e.g. `Acme.DiskReport`.
    pub identifier: String,
    /// e.g. `Disk report`.
    pub display_name: String,
}

impl Project {
    /// Checks `name` and `identifier` (defaulting the latter from the name).
    pub fn new(lang: Lang, name: &str, identifier: Option<&str>) -> Result<Self, String> {
        check_name(name)?;
        let identifier = match identifier {
            Some(id) => id.to_owned(),
            None => format!("Acme.{}", pascal_case(name)),
        };
        validate_identifier(&identifier)
            .map_err(|why| format!("--identifier is not usable: {why}"))?;
        Ok(Project {
            lang,
            name: name.to_owned(),
            identifier,
            display_name: display_name(name),
        })
    }

    /// Where the build leaves the component, relative to the project folder.
    pub fn wasm_path(&self) -> String {
        match self.lang {
            // Cargo names a cdylib after the crate, in which `-` becomes `_`.
            Lang::Rust => format!(
                "target/wasm32-wasip2/release/{}.wasm",
                self.name.replace('-', "_")
            ),
            Lang::Python | Lang::Js | Lang::C => format!("{}.wasm", self.name),
        }
    }

    /// Every file of the project: its path in the folder and its contents.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        let fill = |template: &str| self.fill(template);
        let mut files = vec![
            ("wit/task.wit", TASK_WIT.to_owned()),
            ("cases.toml", fill(CASES_TOML)),
        ];
        match self.lang {
            Lang::Rust => {
                files.extend([
                    ("Cargo.toml", fill(RUST_CARGO_TOML)),
                    ("src/lib.rs", fill(RUST_LIB_RS)),
                    ("README.md", fill(RUST_README)),
                    (".gitignore", RUST_GITIGNORE.to_owned()),
                    ("cronwerk-guest/Cargo.toml", fill(RUST_SDK_CARGO_TOML)),
                ]);
                files.extend(RUST_SDK.map(|(path, text)| (path, text.to_owned())));
            }
            Lang::Python => files.extend([
                ("app.py", fill(PYTHON_APP)),
                ("requirements.txt", PYTHON_REQUIREMENTS.to_owned()),
                ("README.md", fill(PYTHON_README)),
                (".gitignore", PYTHON_GITIGNORE.to_owned()),
                ("tests/cronwerk_testing.py", PYTHON_TEST_KIT.to_owned()),
                ("tests/conftest.py", PYTHON_CONFTEST.to_owned()),
                ("tests/test_app.py", PYTHON_TESTS.to_owned()),
            ]),
            Lang::Js => files.extend([
                ("task.js", fill(JS_TASK)),
                ("package.json", fill(JS_PACKAGE_JSON)),
                ("package-lock.json", js_lock(&self.name)),
                ("README.md", fill(JS_README)),
                (".gitignore", JS_GITIGNORE.to_owned()),
                ("task.test.js", JS_TESTS.to_owned()),
                ("testing/cronwerk-testing.js", JS_TEST_KIT.to_owned()),
                ("testing/hooks.js", JS_TEST_HOOKS.to_owned()),
                ("testing/register.js", JS_TEST_REGISTER.to_owned()),
            ]),
            Lang::C => {
                files.extend([
                    ("task.c", fill(C_TASK)),
                    ("Makefile", fill(C_MAKEFILE)),
                    ("README.md", fill(C_README)),
                    (".gitignore", C_GITIGNORE.to_owned()),
                ]);
                files.extend(C_BINDINGS.map(|(path, text)| (path, text.to_owned())));
            }
        }
        files
    }

    /// Files that are not text, written beside [`Project::files`].
    pub fn binary_files(&self) -> Vec<(&'static str, &'static [u8])> {
        match self.lang {
            Lang::C => vec![C_COMPONENT_TYPE],
            Lang::Rust | Lang::Python | Lang::Js => Vec::new(),
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("__NAME__", &self.name)
            .replace("__IDENTIFIER__", &self.identifier)
            .replace("__DISPLAY_NAME__", &self.display_name)
            .replace("__WASM__", &self.wasm_path())
            .replace("__CRONWERK_VERSION__", env!("CARGO_PKG_VERSION"))
    }

    /// The commands from an empty project to a first run, one per line.
    fn next_steps(&self, dir: &Path) -> Vec<String> {
        let wasm = self.wasm_path();
        let mut steps = vec![format!("cd {}", shell_word(&dir.display().to_string()))];
        match self.lang {
            Lang::Rust => steps.extend([
                "rustup target add wasm32-wasip2                 # once".to_owned(),
                "cargo build --release --target wasm32-wasip2".to_owned(),
            ]),
            Lang::Python => steps.extend([
                "python3 -m venv .venv && . .venv/bin/activate   # once".to_owned(),
                "pip install -r requirements.txt                 # once".to_owned(),
                format!("componentize-py -d wit -w scheduled-task componentize app -o {wasm}"),
            ]),
            Lang::Js => steps.extend([
                "npm install                                     # once".to_owned(),
                "npm run build".to_owned(),
            ]),
            Lang::C => steps.extend([
                "sudo apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 make   # once"
                    .to_owned(),
                "make".to_owned(),
            ]),
        }
        steps.push(format!("cronwerk exec {wasm} --property greeting=Hi"));
        steps
    }
}

/// Project names end up as a folder, a Cargo package, an npm package and a
/// file name: the characters all four accept.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a usable project name: use lowercase letters, digits and single \
             '-' between words, starting with a letter, at most 64 characters (e.g. disk-report)"
        ))
    }
}

/// `disk-report` → `DiskReport`.
fn pascal_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `disk-report` → `Disk report`.
fn display_name(name: &str) -> String {
    let words = name.replace('-', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// [`JS_EXAMPLE_LOCK`] as npm writes it for the template's package.json:
/// the project's own name and version at the top and in the root entry (and
/// no license: the example's is not the project's). A unit test checks the
/// result, so a reformatted example lock cannot slip through.
fn js_lock(name: &str) -> String {
    JS_EXAMPLE_LOCK
        .replacen(
            &format!("  \"name\": \"{JS_EXAMPLE_NAME}\",\n  \"lockfileVersion\""),
            &format!("  \"name\": \"{name}\",\n  \"version\": \"0.1.0\",\n  \"lockfileVersion\""),
            1,
        )
        .replacen(
            &format!(
                "    \"\": {{\n      \"name\": \"{JS_EXAMPLE_NAME}\",\n      \"license\": \"Apache-2.0\",\n"
            ),
            &format!("    \"\": {{\n      \"name\": \"{name}\",\n      \"version\": \"0.1.0\",\n"),
            1,
        )
}

/// A path as it can be pasted into a shell.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+=:@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Why a folder cannot take a new project, if it cannot.
fn check_folder(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(format!(
                "{} is not empty: choose another NAME or --dir, or remove what is there",
                dir.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => Err(format!(
            "{} is a file, not a folder: choose another NAME or --dir",
            dir.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Writes the project's files into `dir`, which [`check_folder`] accepted.
/// Files are created, never overwritten, so a folder that filled up
/// meanwhile loses nothing.
pub fn write_project(project: &Project, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = project
        .files()
        .into_iter()
        .map(|(path, text)| (path, std::borrow::Cow::Owned(text.into_bytes())));
    let binary = project
        .binary_files()
        .into_iter()
        .map(|(path, bytes)| (path, std::borrow::Cow::Borrowed(bytes)));
    for (path, contents) in text.chain(binary) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::File::create_new(&path)
            .and_then(|mut f| f.write_all(&contents))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub async fn run(args: NewArgs) -> anyhow::Result<u8> {
    let project = match Project::new(args.lang, &args.name, args.identifier.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&project.name));
    if let Err(e) = check_folder(&dir) {
        eprintln!("error: {e}");
        return Ok(exit::USAGE);
    }
    write_project(&project, &dir)?;

    let lang = match project.lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
        Lang::C => "C",
    };
    println!(
        "Created a {lang} task in {} (identifier {}).",
        dir.display(),
        project.identifier
    );
    if args.identifier.is_none() {
        println!("(Acme is a placeholder: --identifier YourCompany.Thing picks your own prefix.)");
    }
    println!("\nNext steps (the README in the folder has them too):");
    for step in project.next_steps(&dir) {
        println!("  {step}");
    }
    println!(
        "\nThen copy {} into the folder `cronwerk serve --plugins DIR` watches and schedule it:\n  \
         cronwerk task add \"{}\" --implementation {} --every 1m",
        project.wasm_path(),
        project.display_name,
        project.identifier
    );
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(lang: Lang) -> Project {
        Project::new(lang, "disk-report", None).unwrap()
    }

    #[test]
    fn names_and_identifiers() {
        let p = project(Lang::Rust);
        assert_eq!(p.identifier, "Acme.DiskReport");
        assert_eq!(p.display_name, "Disk report");
        assert_eq!(
            p.wasm_path(),
            "target/wasm32-wasip2/release/disk_report.wasm"
        );
        assert_eq!(project(Lang::Python).wasm_path(), "disk-report.wasm");
        assert_eq!(pascal_case("a1-b-c9x"), "A1BC9x");

        let own = Project::new(Lang::Js, "x", Some("Contoso.Thing")).unwrap();
        assert_eq!(own.identifier, "Contoso.Thing");

        for bad in [
            "",
            "Disk",
            "disk report",
            "-x",
            "x-",
            "a--b",
            "1x",
            "x_y",
            "ä",
        ] {
            let e = Project::new(Lang::Rust, bad, None).unwrap_err();
            assert!(e.contains("not a usable project name"), "{bad}: {e}");
        }
        assert!(Project::new(Lang::Rust, &"x".repeat(65), None).is_err());
        let e = Project::new(Lang::Rust, "x", Some("Acme Thing")).unwrap_err();
        assert!(e.contains("--identifier"), "{e}");
    }

    /// Every placeholder is filled, in every file of every language.
    #[test]
    fn templates_are_filled_in() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            let p = project(lang);
            for (path, text) in p.files() {
                assert!(!text.contains("__NAME__"), "{lang:?} {path}");
                assert!(!text.contains("__IDENTIFIER__"), "{lang:?} {path}");
                assert!(!text.contains("__DISPLAY_NAME__"), "{lang:?} {path}");
                assert!(!text.contains("__WASM__"), "{lang:?} {path}");
            }
            let files = p.files();
            let get = |name: &str| &files.iter().find(|(p, _)| *p == name).unwrap().1;
            assert_eq!(get("wit/task.wit"), TASK_WIT);
            assert!(get("README.md").contains(&p.wasm_path()), "{lang:?}");
            assert!(get("README.md").contains("Acme.DiskReport"), "{lang:?}");
        }
    }

    #[test]
    fn rust_template_names_the_crate_and_identifier() {
        let files = project(Lang::Rust).files();
        let get = |name: &str| &files.iter().find(|(p, _)| *p == name).unwrap().1;
        assert!(get("Cargo.toml").contains("name = \"disk-report\""));
        assert!(get("src/lib.rs").contains("TaskInfo::new(\"Acme.DiskReport\", \"Disk report\")"));
        // The SDK comes along, whole: every module its lib.rs declares.
        assert!(get("Cargo.toml").contains("cronwerk-guest = { path = \"cronwerk-guest\" }"));
        let sdk = get("cronwerk-guest/src/lib.rs");
        for module in sdk.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
            let name = module.trim_end_matches(';');
            if name == "bindings {" || name.starts_with("__private") {
                continue;
            }
            let path = format!("cronwerk-guest/src/{name}.rs");
            assert!(files.iter().any(|(p, _)| *p == path), "{path}");
        }
        for line in sdk.lines().filter_map(|l| l.trim().strip_prefix("mod ")) {
            let path = format!("cronwerk-guest/src/{}.rs", line.trim_end_matches(';'));
            assert!(files.iter().any(|(p, _)| *p == path), "{path}");
        }
        assert!(get("cronwerk-guest/Cargo.toml").contains(env!("CARGO_PKG_VERSION")));
    }

    /// Every source file of the SDK is copied into new Rust projects.
    #[test]
    fn the_copied_sdk_is_all_of_guest_sdk() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs"))
            .map(|n| format!("cronwerk-guest/src/{n}"))
            .collect();
        on_disk.sort();
        let mut copied: Vec<String> = RUST_SDK.iter().map(|(p, _)| p.to_string()).collect();
        copied.sort();
        assert_eq!(copied, on_disk);
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    /// The JavaScript template installs exactly what the tested example
    /// installs: the same pins and the same lock, under its own name.
    #[test]
    fn js_template_pins_what_the_example_pins() {
        let files = project(Lang::Js).files();
        let get = |name: &str| json(&files.iter().find(|(p, _)| *p == name).unwrap().1);
        let manifest = get("package.json");
        let example = json(include_str!(
            "../../../example-tasks/cache-warmup/package.json"
        ));
        assert_eq!(manifest["name"], "disk-report");
        assert_eq!(manifest["dependencies"], example["dependencies"]);
        assert_eq!(
            manifest["scripts"]["build"],
            "componentize-js task.js --wit wit --world-name scheduled-task --out disk-report.wasm"
        );

        let lock = get("package-lock.json");
        assert_eq!(lock["name"], "disk-report");
        assert_eq!(lock["version"], "0.1.0");
        assert_eq!(
            lock["packages"][""],
            serde_json::json!({
                "name": "disk-report",
                "version": "0.1.0",
                "dependencies": example["dependencies"],
            })
        );
        // Everything else is the example's lock, untouched.
        let mut example_lock = json(JS_EXAMPLE_LOCK);
        let mut lock = lock;
        for l in [&mut lock, &mut example_lock] {
            let top = l.as_object_mut().unwrap();
            top.remove("name");
            top.remove("version");
            top["packages"].as_object_mut().unwrap().remove("");
        }
        assert_eq!(lock, example_lock);
    }

    /// A C project carries the kept bindings, byte for byte, and a task
    /// and Makefile that name the project.
    #[test]
    fn c_template_carries_the_bindings() {
        let p = project(Lang::C);
        let files = p.files();
        let get = |name: &str| &files.iter().find(|(p, _)| *p == name).unwrap().1;
        assert!(
            get("task.c")
                .contains("scheduled_task_string_dup(&ret->identifier, \"Acme.DiskReport\")")
        );
        assert!(get("Makefile").contains("OUT     ?= disk-report.wasm"));
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-c/bindings");
        for name in ["scheduled_task.c", "scheduled_task.h"] {
            assert_eq!(
                get(&format!("bindings/{name}")).as_bytes(),
                std::fs::read(root.join(name)).unwrap()
            );
        }
        let [(path, bytes)] = p.binary_files()[..] else {
            panic!("one binary file")
        };
        assert_eq!(path, "bindings/scheduled_task_component_type.o");
        assert_eq!(
            bytes,
            std::fs::read(root.join("scheduled_task_component_type.o")).unwrap()
        );
        assert!(bytes.starts_with(b"\0asm"), "a WebAssembly object");

        let tmp = tempfile::tempdir().unwrap();
        write_project(&p, tmp.path()).unwrap();
        assert_eq!(std::fs::read(tmp.path().join(path)).unwrap(), bytes);
    }

    #[test]
    fn next_steps_quote_odd_folders() {
        let p = project(Lang::Rust);
        assert_eq!(p.next_steps(Path::new("disk-report"))[0], "cd disk-report");
        assert_eq!(
            p.next_steps(Path::new("my tasks/it's"))[0],
            r"cd 'my tasks/it'\''s'"
        );
        assert!(
            p.next_steps(Path::new("x"))
                .last()
                .unwrap()
                .contains("cronwerk exec target/wasm32-wasip2/release/disk_report.wasm")
        );
    }

    #[test]
    fn folder_must_be_new_or_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(check_folder(&tmp.path().join("new")), Ok(()));
        assert_eq!(check_folder(tmp.path()), Ok(()));
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let e = check_folder(tmp.path()).unwrap_err();
        assert!(e.contains("is not empty"), "{e}");
        let e = check_folder(&tmp.path().join("file")).unwrap_err();
        assert!(e.contains("is a file"), "{e}");
    }

    #[test]
    fn writes_every_file_and_overwrites_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("disk-report");
        let p = project(Lang::Python);
        write_project(&p, &dir).unwrap();
        for (path, text) in p.files() {
            assert_eq!(std::fs::read_to_string(dir.join(path)).unwrap(), text);
        }
        std::fs::write(dir.join("app.py"), "mine").unwrap();
        assert!(write_project(&p, &dir).is_err());
        assert_eq!(std::fs::read_to_string(dir.join("app.py")).unwrap(), "mine");
    }
}
