//! Compose's variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}`, and `$$` for a literal `$`.
//! Applied to the file's text line by line (so errors keep their line numbers), comments
//! excepted.

/// Why a file cannot be interpolated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${VAR:?message}` of an unset (or empty) variable.
    #[error("line {line}: required variable {name} is missing a value: {message}")]
    Required {
        /// The 1-based line.
        line: usize,
        /// The variable.
        name: String,
        /// The file's message.
        message: String,
    },
    /// A value with a line break: spliced into the file's text it would add YAML of its own.
    #[error(
        "line {line}: variable {name} holds a line break, which a compose value cannot take here"
    )]
    LineBreak {
        /// The 1-based line.
        line: usize,
        /// The variable.
        name: String,
    },
    /// `${` without its `}`, or a bad name.
    #[error("line {line}: invalid interpolation format {text:?}")]
    Syntax {
        /// The 1-based line.
        line: usize,
        /// The offending text.
        text: String,
    },
}

/// Interpolates `text` with `lookup` (the environment, then `.env`).
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        out.push_str(&interpolate_line(line, i + 1, lookup)?);
    }
    Ok(out)
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn interpolate_line(
    line: &str,
    n: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    // Values are spliced into the text before it is parsed: one with a line break could add
    // keys (a service's volumes, say) that the file does not have.
    let broken = std::cell::Cell::new(None);
    let checked = |name: &str| {
        let v = lookup(name);
        if v.as_deref().is_some_and(|v| v.contains(['\n', '\r'])) {
            broken.set(Some(name.to_string()));
        }
        v
    };
    let out = splice(line, n, &checked)?;
    match broken.into_inner() {
        Some(name) => Err(InterpolateError::LineBreak { line: n, name }),
        None => Ok(out),
    }
}

fn splice(
    line: &str,
    n: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| InterpolateError::Syntax {
                line: n,
                text: rest.trim_end().to_string(),
            })?;
            out.push_str(&braced(&r[..end], n, lookup)?);
            rest = &r[end + 1..];
        } else {
            let len = after.find(|c| !is_name(c)).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn braced(
    inner: &str,
    n: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let len = inner.find(|c| !is_name(c)).unwrap_or(inner.len());
    let (name, op) = inner.split_at(len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(InterpolateError::Syntax {
            line: n,
            text: format!("${{{inner}}}"),
        });
    }
    let value = lookup(name);
    let set = value.is_some();
    let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let pick = |cond: bool, arg: &str| -> String {
        if cond {
            value.clone().unwrap_or_default()
        } else {
            arg.to_string()
        }
    };
    let required = |cond: bool, msg: &str| -> Result<String, InterpolateError> {
        if cond {
            Ok(value.clone().unwrap_or_default())
        } else {
            Err(InterpolateError::Required {
                line: n,
                name: name.to_string(),
                message: msg.to_string(),
            })
        }
    };
    Ok(match op {
        "" => value.clone().unwrap_or_default(),
        o if o.starts_with(":-") => pick(nonempty, &o[2..]),
        o if o.starts_with('-') => pick(set, &o[1..]),
        o if o.starts_with(":?") => required(nonempty, &o[2..])?,
        o if o.starts_with('?') => required(set, &o[1..])?,
        o if o.starts_with(":+") => {
            if nonempty {
                o[2..].to_string()
            } else {
                String::new()
            }
        }
        o if o.starts_with('+') => {
            if set {
                o[1..].to_string()
            } else {
                String::new()
            }
        }
        _ => {
            return Err(InterpolateError::Syntax {
                line: n,
                text: format!("${{{inner}}}"),
            })
        }
    })
}

/// The `KEY=VALUE` lines of a `.env` file (comments, blank lines and `export ` skipped, quotes
/// around values removed).
pub fn dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.2".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let i = |s: &str| interpolate(s, &env);
        assert_eq!(i("image: app:${TAG}\n").unwrap(), "image: app:1.2\n");
        assert_eq!(i("a: $TAG-x").unwrap(), "a: 1.2-x");
        assert_eq!(
            i("a: ${NOPE:-d} ${EMPTY:-d} ${EMPTY-d}").unwrap(),
            "a: d d "
        );
        assert_eq!(i("a: ${TAG:+yes}${NOPE:+no}").unwrap(), "a: yes");
        assert_eq!(i("a: $$HOME $ 5").unwrap(), "a: $HOME $ 5");
        assert_eq!(i("# ${NOPE:?x}\n").unwrap(), "# ${NOPE:?x}\n");
        assert_eq!(
            i("a: 1\nb: ${NOPE:?set it}\n"),
            Err(InterpolateError::Required {
                line: 2,
                name: "NOPE".into(),
                message: "set it".into()
            })
        );
        assert!(matches!(
            i("a: ${TAG"),
            Err(InterpolateError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            i("a: ${1X}"),
            Err(InterpolateError::Syntax { .. })
        ));
    }

    #[test]
    fn dotenv_lines() {
        let d = dotenv("# c\nA=1\nexport B = \"two\"\n\nC='3'\nbad\n");
        assert_eq!(
            d,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "3".into())
            ]
        );
    }
}
