//! Text to `serde_json::Value`, rejecting repeated keys. serde_json (like Go)
//! silently keeps the last of two equal keys, which turns a pasted duplicate
//! domain into a vanished one; here it is an error with line and column.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why the text is not acceptable JSON, positioned for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub(crate) fn parse_strict(text: &str) -> Result<Value, JsonError> {
    // Editors on Windows like to prepend a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str::<Strict>(text)
        .map(|Strict(v)| v)
        .map_err(|e| {
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            let bare = full.strip_suffix(&position).unwrap_or(&full);
            let message = match e.classify() {
                serde_json::error::Category::Data => bare.to_owned(),
                _ => format!("syntax error: {bare}"),
            };
            JsonError {
                line: e.line(),
                column: e.column(),
                message,
            }
        })
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // The JSON parser never yields NaN or infinity, so `None` is unreachable
        // in practice; null is a harmless stand-in.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|Strict(v)| v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?} (each key may appear once per object)"
                )));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json() {
        let text = r#"{"b": [1, -2, 2.5, "x", null, true], "a": {}}"#;
        let want: Result<Value, _> = serde_json::from_str(text);
        assert_eq!(parse_strict(text).ok(), want.ok());
    }

    #[test]
    fn keeps_key_order() {
        let v = parse_strict(r#"{"z": 1, "a": 2}"#).unwrap_or_default();
        let keys: Vec<_> = v.as_object().into_iter().flat_map(|m| m.keys()).collect();
        assert_eq!(keys, ["z", "a"]);
    }

    #[test]
    fn positions_syntax_errors() {
        let err = parse_strict("{\n  \"a\": 1\n  \"b\": 2\n}").err();
        assert_eq!(
            err,
            Some(JsonError {
                line: 3,
                column: 3,
                message: "syntax error: expected `,` or `}`".into()
            })
        );
    }

    #[test]
    fn rejects_duplicate_keys() {
        let err = parse_strict("{\"d\": {\"a\": 1,\n \"a\": 2}}").err();
        let err = err.map(|e| (e.line, e.message));
        assert_eq!(
            err,
            Some((
                2,
                "duplicate key \"a\" (each key may appear once per object)".into()
            ))
        );
    }

    #[test]
    fn accepts_byte_order_mark() {
        assert_eq!(
            parse_strict("\u{feff}{}").ok(),
            Some(Value::Object(Map::new()))
        );
    }
}
