//! Implementation identifiers (`Acme.HelloScheduledTask`): what a
//! component declares and configurations refer to. One rule for every
//! place an identifier enters: a component's `describe`, a configuration,
//! a setting, a broadcast, `cronwerk new`.

/// Identifiers are what configurations refer to: keep them printable.
pub fn validate_identifier(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".into());
    }
    if id.len() > 128 {
        return Err(format!("it is {} bytes long; the limit is 128", id.len()));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "'{id}' contains {c:?}; use letters, digits, '.', '_' and '-' (e.g. Acme.HelloScheduledTask)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_printable_and_bounded() {
        assert!(validate_identifier("Acme.Hello_Task-2").is_ok());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("a b").unwrap_err().contains("' '"));
        assert!(validate_identifier(&"a".repeat(129)).is_err());
    }
}
