//! API Gateway's `$input.params().header` rendered into a mapping template is a Java
//! `Map.toString()`: `{Content-Type=multipart/form-data; boundary=x, Host=example.com}`. It has no
//! escaping, so a value may itself contain `=` and `, `. We split entries only before
//! `, Name=` where `Name` is an HTTP header-name token (RFC 9110 `tchar`s), which is the only
//! reading that keeps values such as `X-Forwarded-For=1.2.3.4, 5.6.7.8` whole.
//!
//! Remaining ambiguity, by construction of the format: a value containing `, token=` (say a
//! header whose value is `a, b=c`) is read as two entries. The legacy template cannot express it
//! any better; the router envelope carries headers as a JSON list instead.

use crate::DecodeError;

/// Whether `b` may appear in an HTTP header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// If `rest` starts with a header-name token followed by `=`, the token's length.
fn token_then_eq(rest: &[u8]) -> Option<usize> {
    let len = rest.iter().take_while(|b| is_tchar(**b)).count();
    (len > 0 && rest.get(len) == Some(&b'=')).then_some(len)
}

/// Parses Java `Map.toString()` text into `(name, value)` pairs, names lower-cased, in order.
///
/// ```
/// let h = mailroom_envelope::parse_java_map("{Host=a.example, X-Forwarded-For=1.2.3.4, 5.6.7.8}").unwrap();
/// assert_eq!(h, vec![("host".into(), "a.example".into()), ("x-forwarded-for".into(), "1.2.3.4, 5.6.7.8".into())]);
/// ```
pub fn parse_java_map(text: &str) -> Result<Vec<(String, String)>, DecodeError> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| DecodeError::JavaMap("expected text wrapped in { }".into()))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bytes = inner.as_bytes();
    // Entry start offsets: 0, and every position just after a ", " that precedes `token=`.
    let mut starts = vec![0usize];
    let mut i = 0;
    while i + 2 <= bytes.len() {
        if bytes[i] == b',' && bytes[i + 1] == b' ' && token_then_eq(&bytes[i + 2..]).is_some() {
            starts.push(i + 2);
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        // Every split point is just after an ASCII ", ", so these are char boundaries.
        let end = starts.get(n + 1).map_or(bytes.len(), |next| next - 2);
        let entry = inner.get(start..end).unwrap_or_default();
        let name_len = token_then_eq(entry.as_bytes()).ok_or_else(|| {
            DecodeError::JavaMap(format!(
                "entry {} does not start with a header name and '='",
                n + 1
            ))
        })?;
        let (name, value) = entry.split_at(name_len);
        out.push((name.to_ascii_lowercase(), value[1..].to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn values_with_commas_and_equals_stay_whole() {
        let got = parse_java_map(
            "{Content-Type=multipart/form-data; boundary=xYzZY, Host=example.com, X-Forwarded-For=1.2.3.4, 5.6.7.8, X-Amzn-Trace-Id=Root=1-abc}",
        )
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("content-type", "multipart/form-data; boundary=xYzZY"),
                ("host", "example.com"),
                ("x-forwarded-for", "1.2.3.4, 5.6.7.8"),
                ("x-amzn-trace-id", "Root=1-abc"),
            ])
        );
    }

    #[test]
    fn empty_map_and_empty_value() {
        assert_eq!(parse_java_map("{}").unwrap(), vec![]);
        assert_eq!(parse_java_map(" { } ").unwrap(), vec![]);
        assert_eq!(parse_java_map("{A=}").unwrap(), pairs(&[("a", "")]));
    }

    #[test]
    fn rejects_non_maps() {
        assert!(parse_java_map("Host=x").is_err());
        assert!(parse_java_map("{no equals here}").is_err());
        assert!(parse_java_map("{=x}").is_err());
        assert!(parse_java_map("").is_err());
    }

    #[test]
    fn multibyte_values_are_kept() {
        let got = parse_java_map("{X-Name=Grüße, dü=1, Y=ok}").unwrap();
        assert_eq!(got, pairs(&[("x-name", "Grüße, dü=1"), ("y", "ok")]));
    }
}
