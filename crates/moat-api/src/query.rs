//! Docker's query-parameter conventions: booleans (`1`, `true`) and `filters` (JSON of
//! `{"key": ["value", ...]}`, or, from older clients, `{"key": {"value": true}}`).

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

/// Docker's query booleans: `1`, `true`, `True`.
pub fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "True" | "TRUE"))
}

/// The `filters` parameter as key → values.
pub fn filters(raw: Option<&str>) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let Some(f) = raw.filter(|f| !f.is_empty()) else {
        return Ok(HashMap::new());
    };
    let v: HashMap<String, Value> = serde_json::from_str(f)
        .map_err(|e| ApiError::BadParameter(format!("invalid filters {f:?}: {e}")))?;
    Ok(v.into_iter()
        .map(|(k, v)| {
            let list = match v {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                Value::Object(o) => o.keys().cloned().collect(),
                _ => vec![],
            };
            (k, list)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filter_shapes_parse() {
        let f = filters(Some(r#"{"status":["exited"],"label":{"a=b":true}}"#)).unwrap();
        assert_eq!(f["status"], ["exited"]);
        assert_eq!(f["label"], ["a=b"]);
        assert!(filters(None).unwrap().is_empty());
        assert!(filters(Some("{")).is_err());
        assert!(flag(&Some("1".into())) && flag(&Some("true".into())) && !flag(&Some("0".into())));
    }
}
