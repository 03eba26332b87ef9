//! The `cronwerk` command line: one file per verb, plus shared argument
//! parsers and exit codes.

mod apply;
mod args;
mod audit;
mod backfill;
mod common;
mod compile_cache;
mod compile_worker;
mod config;
mod config_file;
mod events;
mod exec;
mod export;
mod farm;
mod inspect;
mod instances;
mod new;
mod plugins;
mod replay;
mod run_ids;
mod runs;
mod serve;
mod shell;
mod task;
mod tasks_file;
mod test_cases;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes shared by every verb.
pub mod exit {
    /// The task succeeded (or the command did what was asked).
    pub const OK: u8 = 0;
    /// The task returned an error.
    pub const TASK_FAILED: u8 = 1;
    /// A limit or trap stopped the task, or it was cancelled.
    pub const STOPPED: u8 = 2;
    /// The component file could not be loaded.
    pub const LOAD_ERROR: u8 = 3;
    /// The command line was wrong (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// Something else went wrong in the host (EX_SOFTWARE).
    pub const INTERNAL: u8 = 70;
}

#[derive(Parser)]
#[command(
    name = "cronwerk",
    version,
    about = "A scheduled-task host whose tasks are WebAssembly components",
    after_help = "Exit codes: 0 success, 1 the task returned an error, 2 a limit or trap stopped \
                  it (or it was cancelled), 3 the component could not be loaded, 64 bad usage."
)]
struct Cli {
    /// Where configurations, runs and events are kept (shared by the CLI and `serve`).
    #[arg(
        long,
        global = true,
        env = "CRONWERK_DATA_DIR",
        default_value = "cronwerk-data"
    )]
    data_dir: std::path::PathBuf,
    /// Keep the store in this PostgreSQL database instead (postgres://user@host/db),
    /// shared by several `serve` instances.
    #[arg(long, global = true, env = "CRONWERK_DATABASE", value_name = "URL")]
    database: Option<String>,
    /// How the host's own log lines are written on stderr: text, or json
    /// (one object per line, for a log pipeline; `serve`'s own lines become
    /// info lines too, and the default level is info instead of warn).
    #[arg(
        long,
        global = true,
        env = "CRONWERK_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Load a component and show what it is: identifier, version, imports.
    Inspect(inspect::InspectArgs),
    /// Run a component once in a sandbox and show its outcome and events.
    Exec(exec::ExecArgs),
    /// Run a component against declared cases (what each run is told, the
    /// outcome, message, events and state it should come to), for CI.
    Test(test_cases::TestArgs),
    /// Run the scheduler: load the plugins folder and run due configurations.
    Serve(serve::ServeArgs),
    /// Manage task configurations.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Settings shared by all configurations of an implementation identifier
    /// (what tasks read through the `config` import).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show the run history.
    Runs(runs::RunsArgs),
    /// Show the event log.
    Events(events::EventsArgs),
    /// Show the components running instances have loaded.
    Plugins(plugins::PluginsArgs),
    /// Show the `serve` instances sharing this store, their roles and liveness.
    Instances(instances::InstancesArgs),
    /// Web-farm broadcasts: run a task once on every live instance.
    #[command(subcommand)]
    Farm(farm::FarmCommand),
    /// Manage the HTTP API's tokens: the default one and named ones.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Show who changed which configuration, setting or token, and the
    /// plugins-folder swaps.
    Audit(audit::AuditArgs),
    /// Make the configurations and settings match a file (configuration as
    /// code); prints what changes.
    Apply(apply::ApplyArgs),
    /// Write the configurations and settings as a file `apply` reads.
    Export(export::ExportArgs),
    /// Create a task project to build: Rust, Python, JavaScript or C.
    New(new::NewArgs),
    /// A file for `serve --config`: `cronwerk config-file example` prints a
    /// commented template with every key.
    #[command(subcommand)]
    ConfigFile(ConfigFileCommand),
    /// Print the shell completion script (bash, zsh, fish, ...).
    Completions(shell::CompletionsArgs),
    /// Print the manual page, or write one per command with --out DIR.
    Man(shell::ManArgs),
    /// The child process `serve` compiles a component in.
    #[command(hide = true)]
    CompileWorker(compile_worker::CompileWorkerArgs),
}

#[derive(clap::Subcommand)]
enum ConfigFileCommand {
    /// Print a commented template: every key `serve --config` takes, with
    /// its help and default.
    Example,
}

/// Entry point of the `cronwerk` binary.
pub fn main() -> ExitCode {
    // A Tab in a shell with cronwerk's completions: answered, then exits.
    shell::answer_completion_request();
    let args = match config_file::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // `cronwerk runs | head` should end quietly when `head` has read
        // enough, as other command-line tools do, not panic on the closed
        // pipe. `serve` keeps ignoring SIGPIPE: a closed log pipe must not
        // kill the scheduler.
        // SAFETY: restoring a signal's default disposition at start-up,
        // before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if matches!(cli.command, Command::Serve(_)) {
        serve::before_threads();
    }
    let command = match cli.command {
        Command::CompileWorker(args) => return compile_worker::run(args),
        command => command,
    };
    // The pool says "connection error" per pooled connection when the
    // database goes away; the store's watcher says it once, with the cause.
    let default_filter = match cli.log_format {
        LogFormat::Text => "warn,deadpool=error",
        LogFormat::Json => "info,deadpool=error",
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CRONWERK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => subscriber.init(),
        // Fields at the top level, named as in the API (run_id, task, code).
        LogFormat::Json => subscriber.json().flatten_event(true).init(),
    }
    let json_logs = cli.log_format == LogFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    common::use_database(cli.database.clone());
    let code = runtime.block_on(async {
        let result = match command {
            Command::Inspect(args) => inspect::run(args).await,
            Command::Exec(args) => exec::run(args).await,
            Command::Test(args) => test_cases::run(args).await,
            Command::Serve(args) => serve::run(&cli.data_dir, args, json_logs).await,
            Command::Task(command) => task::run(&cli.data_dir, command).await,
            Command::Config(command) => config::run(&cli.data_dir, command).await,
            Command::Runs(args) => runs::run(&cli.data_dir, args).await,
            Command::Events(args) => events::run(&cli.data_dir, args).await,
            Command::Plugins(args) => plugins::run(&cli.data_dir, args).await,
            Command::Instances(args) => instances::run(&cli.data_dir, args).await,
            Command::Farm(command) => farm::run(&cli.data_dir, command).await,
            Command::Token(command) => token::run(&cli.data_dir, command).await,
            Command::Audit(args) => audit::run(&cli.data_dir, args).await,
            Command::Apply(args) => apply::run(&cli.data_dir, args).await,
            Command::Export(args) => export::run(&cli.data_dir, args).await,
            Command::New(args) => new::run(args).await,
            Command::ConfigFile(ConfigFileCommand::Example) => {
                print!("{}", config_file::example());
                Ok(exit::OK)
            }
            Command::Completions(args) => shell::completions(args),
            Command::Man(args) => shell::man(args),
            Command::CompileWorker(_) => unreachable!("run before the async runtime"),
        };
        result.unwrap_or_else(|e| {
            if e.is::<common::NoStore>() || e.is::<run_ids::UnknownRun>() {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
            let hint = common::store_hint(&e);
            match json_logs {
                true => tracing::error!("{e:#}{hint}"),
                false => eprintln!("error: {e:#}{hint}"),
            }
            exit::INTERNAL
        })
    });
    // Everything a command does is awaited above; what may still run is a
    // compilation given up on (--compile-timeout), which must not hold the
    // process until Cranelift is done with it.
    runtime.shutdown_background();
    ExitCode::from(code)
}
