//! The one way a name typed by a person (a CLI flag, an API query) becomes
//! one of the model's enums: the enum's own derived mapping, with an error
//! that lists the names it takes.

use std::str::FromStr;

use strum::VariantNames;

/// Parses `text` as a `T`, or says what `what` may be: "unknown level 'x':
/// use trace, debug, info, warning or error".
pub fn parse<T: FromStr + VariantNames>(what: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| {
        let names = T::VARIANTS;
        let list = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        format!("unknown {what} '{text}': use {list}")
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Level, RunState};
    use super::*;

    #[test]
    fn names_the_choices() {
        assert_eq!(parse::<Level>("level", "WARN"), Ok(Level::Warning));
        let err = parse::<Level>("level", "loud").unwrap_err();
        assert_eq!(
            err,
            "unknown level 'loud': use trace, debug, info, warning or error"
        );
        let err = parse::<RunState>("run state", "done").unwrap_err();
        assert!(
            err.starts_with("unknown run state 'done': use queued, running"),
            "{err}"
        );
    }
}
