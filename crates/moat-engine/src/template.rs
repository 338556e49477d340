//! The subset of Go templates that `docker inspect -f` users write: `{{.A.B}}` paths,
//! `{{json .X}}`, `{{index .X "key"}}` / `{{index .X 0}}`, `{{len .X}}`, `{{join .X ","}}`,
//! `{{upper .X}}`, `{{lower .X}}`, over the inspect document; values print as Go prints them
//! (`[a b]` for lists, `map[k:v]` for objects).

use serde_json::Value;

/// Why a template cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// an action is malformed or uses what is not supported
    #[error("template: {0}")]
    Parse(String),
    /// a field that is not there (as Go's "map has no entry for key")
    #[error("template: map has no entry for key {0:?}")]
    Missing(String),
}

/// Renders `tpl` against `v`.
pub fn render(tpl: &str, v: &Value) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Parse(format!("unclosed action in {tpl:?}")))?;
        let action = after[..end]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        out.push_str(&eval(action, v)?.map(|x| show(&x)).unwrap_or_default());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits an action into words; quoted strings stay whole (quotes removed).
fn words(action: &str) -> Result<Vec<(String, bool)>, TemplateError> {
    let mut out = vec![];
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => s.extend(chars.next()),
                    Some(c) => s.push(c),
                    None => {
                        return Err(TemplateError::Parse(format!(
                            "unclosed quote in {action:?}"
                        )))
                    }
                }
            }
            out.push((s, true));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push((s, false));
        }
    }
    Ok(out)
}

fn path(p: &str, v: &Value) -> Result<Value, TemplateError> {
    let mut cur = v;
    for key in p.split('.').filter(|k| !k.is_empty()) {
        cur = match cur {
            Value::Object(m) => m
                .get(key)
                .ok_or_else(|| TemplateError::Missing(key.to_string()))?,
            Value::Null => return Ok(Value::Null),
            _ => {
                return Err(TemplateError::Parse(format!(
                    "can't evaluate field {key} in {p}"
                )))
            }
        };
    }
    Ok(cur.clone())
}

/// One argument: a path, a quoted string or a number.
fn arg(w: &(String, bool), v: &Value) -> Result<Value, TemplateError> {
    match w {
        (s, true) => Ok(Value::String(s.clone())),
        (s, false) if s.starts_with('.') => path(s, v),
        (s, false) => s
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| TemplateError::Parse(format!("function {s:?} not defined"))),
    }
}

fn eval(action: &str, v: &Value) -> Result<Option<Value>, TemplateError> {
    let w = words(action)?;
    let Some((first, rest)) = w.split_first() else {
        return Ok(None);
    };
    let need = |n: usize| {
        if rest.len() == n {
            Ok(())
        } else {
            Err(TemplateError::Parse(format!(
                "wrong number of args for {}",
                first.0
            )))
        }
    };
    let val = match first.0.as_str() {
        "json" => {
            need(1)?;
            Value::String(serde_json::to_string(&arg(&rest[0], v)?).unwrap_or_default())
        }
        "len" => {
            need(1)?;
            Value::from(match arg(&rest[0], v)? {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.len(),
                _ => return Err(TemplateError::Parse("len of a value without one".into())),
            })
        }
        "upper" | "lower" => {
            need(1)?;
            let s = show(&arg(&rest[0], v)?);
            Value::String(if first.0 == "upper" {
                s.to_uppercase()
            } else {
                s.to_lowercase()
            })
        }
        "join" => {
            need(2)?;
            let sep = show(&arg(&rest[1], v)?);
            match arg(&rest[0], v)? {
                Value::Array(a) => Value::String(a.iter().map(show).collect::<Vec<_>>().join(&sep)),
                other => Value::String(show(&other)),
            }
        }
        "index" => {
            if rest.is_empty() {
                return Err(TemplateError::Parse(
                    "wrong number of args for index".into(),
                ));
            }
            let mut cur = arg(&rest[0], v)?;
            for k in &rest[1..] {
                cur = match (cur, arg(k, v)?) {
                    (Value::Object(m), Value::String(key)) => {
                        m.get(&key).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_u64().unwrap_or(u64::MAX) as usize;
                        a.get(i).cloned().ok_or_else(|| {
                            TemplateError::Parse(format!("index out of range: {i}"))
                        })?
                    }
                    _ => return Err(TemplateError::Parse("can't index that".into())),
                };
            }
            cur
        }
        p if p.starts_with('.') && rest.is_empty() => path(p, v)?,
        other => {
            return Err(TemplateError::Parse(format!(
                "function {other:?} not defined"
            )))
        }
    };
    Ok(Some(val))
}

/// A value as Go's text/template prints it.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, x)| format!("{k}:{}", show(x)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_what_docker_inspect_users_write() {
        let v = json!({"Name": "/web", "State": {"Status": "running", "Pid": 42, "Paused": false},
            "Config": {"Labels": {"a.b": "c"}, "Cmd": ["sh", "-c", "x"], "Env": null},
            "RepoTags": ["busybox:latest"]});
        let r = |t: &str| render(t, &v).unwrap();
        assert_eq!(
            r("{{.State.Status}} {{.State.Pid}} {{.State.Paused}}"),
            "running 42 false"
        );
        assert_eq!(r("{{.Name}}"), "/web");
        assert_eq!(r(r#"{{index .Config.Labels "a.b"}}"#), "c");
        assert_eq!(r("{{index .RepoTags 0}}"), "busybox:latest");
        assert_eq!(r("{{json .Config.Cmd}}"), r#"["sh","-c","x"]"#);
        assert_eq!(r("{{.Config.Cmd}}"), "[sh -c x]");
        assert_eq!(r("{{len .Config.Cmd}}"), "3");
        assert_eq!(r(r#"{{join .Config.Cmd ","}}"#), "sh,-c,x");
        assert_eq!(r("{{upper .State.Status}}"), "RUNNING");
        assert_eq!(r("{{.Config.Env}}"), "<no value>");
        assert_eq!(r("id={{- .Name -}}!"), "id=/web!");
        assert_eq!(
            render("{{.Nope}}", &v),
            Err(TemplateError::Missing("Nope".into()))
        );
        assert!(render("{{range .RepoTags}}", &v).is_err());
        assert!(render("{{.Name", &v).is_err());
    }
}
