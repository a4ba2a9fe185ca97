//! Strict JSON for imports: the same values as `serde_json::Value`, except that an object with
//! the same key twice is refused (serde_json keeps the last one silently, so a record edited by
//! hand could carry two `visitors` and import the wrong one). The error says where: the path of
//! the repeated key, as `variants[1].visitors`.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// One step of a path inside a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Why a text is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictError {
    /// A key repeated inside one object, with the path of the key.
    DuplicateKey(Vec<Step>),
    /// Anything else serde_json refuses (syntax, depth), with its line and column.
    Syntax(String),
}

/// Renders a path as `variants[1].visitors` (the form `serde_path_to_error` uses).
pub fn render_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// Parses `text` as one JSON value, refusing duplicate keys anywhere in it.
pub fn parse(text: &str) -> Result<Value, StrictError> {
    let found = RefCell::new(None);
    let mut path = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = Strict {
        path: &mut path,
        found: &found,
    };
    let result = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match result {
        Ok(value) => Ok(value),
        Err(err) => match found.into_inner() {
            Some(path) => Err(StrictError::DuplicateKey(path)),
            None => Err(StrictError::Syntax(err.to_string())),
        },
    }
}

struct Strict<'a> {
    path: &'a mut Vec<Step>,
    found: &'a RefCell<Option<Vec<Step>>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.path.push(Step::Index(items.len()));
            let next = seq.next_element_seed(Strict {
                path: self.path,
                found: self.found,
            });
            self.path.pop();
            match next? {
                Some(value) => items.push(value),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.path.push(Step::Key(key.clone()));
            if object.contains_key(&key) {
                *self.found.borrow_mut() = Some(self.path.clone());
                self.path.pop();
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = map.next_value_seed(Strict {
                path: self.path,
                found: self.found,
            });
            self.path.pop();
            object.insert(key, value?);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_refused_with_its_path() {
        let err = parse(r#"{"a":1,"v":[{"x":1},{"x":2,"x":3}]}"#).unwrap_err();
        assert_eq!(
            err,
            StrictError::DuplicateKey(vec![
                Step::Key("v".into()),
                Step::Index(1),
                Step::Key("x".into())
            ])
        );
        if let StrictError::DuplicateKey(path) = err {
            assert_eq!(render_path(&path), "v[1].x");
        }
        assert_eq!(
            parse(r#"{"a":1,"b":[1,2.5,"x",null,true]}"#).unwrap(),
            serde_json::json!({"a":1,"b":[1,2.5,"x",null,true]})
        );
        assert!(matches!(parse("{} x"), Err(StrictError::Syntax(_))));
        // Deep nesting is refused by serde_json's recursion limit, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(matches!(parse(&deep), Err(StrictError::Syntax(_))));
    }
}
