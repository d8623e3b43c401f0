//! V2 `parameters` maps: string keys to string, integer, float or boolean values.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One parameter value. Nested objects and arrays are not allowed by the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Parameter {
    /// `true` / `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
}

impl Parameter {
    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Parameter::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Parameter::Int(i) => u64::try_from(*i).ok(),
            Parameter::Uint(u) => Some(*u),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Parameter::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<bool> for Parameter {
    fn from(v: bool) -> Self {
        Parameter::Bool(v)
    }
}
impl From<i64> for Parameter {
    fn from(v: i64) -> Self {
        Parameter::Int(v)
    }
}
impl From<f64> for Parameter {
    fn from(v: f64) -> Self {
        Parameter::Float(v)
    }
}
impl From<&str> for Parameter {
    fn from(v: &str) -> Self {
        Parameter::String(v.to_owned())
    }
}
impl From<String> for Parameter {
    fn from(v: String) -> Self {
        Parameter::String(v)
    }
}

/// A `parameters` map. Ordered so that encodings are deterministic.
pub type Parameters = BTreeMap<String, Parameter>;

impl Serialize for Parameter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Parameter::Bool(b) => s.serialize_bool(*b),
            Parameter::Int(i) => s.serialize_i64(*i),
            Parameter::Uint(u) => s.serialize_u64(*u),
            Parameter::Float(f) => s.serialize_f64(*f),
            Parameter::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for Parameter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParameterVisitor)
    }
}

struct ParameterVisitor;

impl<'de> Visitor<'de> for ParameterVisitor {
    type Value = Parameter;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameter value: string, number or boolean")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Parameter, E> {
        Ok(Parameter::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Parameter, E> {
        Ok(Parameter::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Parameter, E> {
        Ok(i64::try_from(v).map_or(Parameter::Uint(v), Parameter::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Parameter, E> {
        Ok(Parameter::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Parameter, E> {
        Ok(Parameter::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Parameter, E> {
        Ok(Parameter::String(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Parameter, A::Error> {
        Err(de::Error::custom(
            "parameter values must be a string, number or boolean, not an object",
        ))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Parameter, A::Error> {
        Err(de::Error::custom(
            "parameter values must be a string, number or boolean, not an array",
        ))
    }
}

/// Deserializes an optional `parameters` field where `null` means empty.
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Parameters, D::Error> {
    Ok(Option::<Parameters>::deserialize(d)?.unwrap_or_default())
}
