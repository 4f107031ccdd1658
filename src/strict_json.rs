//! JSON in which every object, at any depth, holds each key once.
//!
//! `serde_json` keeps the last of two equal keys while another parser may keep the first, so a
//! document with a repeated key can mean two different things to two readers. Tokens (the JWT
//! header and claims) and request bodies are read through [`StrictJson`], which refuses such
//! documents instead of picking one reading.

use serde_json::{Map, Value};

/// A JSON value whose objects, at any depth, hold each key once; deserializing a document
/// with a repeated key fails (`serde_json::from_slice::<StrictJson>`).
pub struct StrictJson(pub Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
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
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictJson(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(text: &str) -> bool {
        serde_json::from_str::<StrictJson>(text).is_ok()
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert!(parses(r#"{"a":1,"b":[{"c":2}],"d":{"a":1}}"#));
        assert!(!parses(r#"{"a":1,"a":1}"#));
        assert!(!parses(r#"{"a":{"b":1,"b":2}}"#));
        assert!(!parses(r#"[{"c":1,"c":1}]"#));
    }

    #[test]
    fn values_are_kept_as_sent() {
        let StrictJson(value) = serde_json::from_str(r#"{"a":[1,-2,2.5,"x",true,null]}"#).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": [1, -2, 2.5, "x", true, null]})
        );
    }
}
