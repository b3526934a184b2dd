//! The portable encoding of [`Value`] for save data: JSON with type tags.
//!
//! Every save is stored on the server as JSON, so it must survive any JSON tool (and the
//! server's own re-serialization) while keeping Godot's types. The rules (also in
//! `docs/save-format.md`):
//!
//! | Value | JSON |
//! |---|---|
//! | `Nil`, `Bool`, `String` | `null`, `true`/`false`, `"text"` |
//! | `Int` | an integer without a decimal point: `5` |
//! | `Float` (finite) | a number with a decimal point or exponent: `5.0`, `-0.0`, `1e300` |
//! | `Float` (NaN, ±inf) | `{"$t":"float","v":"nan"}` / `"inf"` / `"-inf"` |
//! | `Array` | a JSON array |
//! | `Dictionary` with only `String` keys, none of them `"$t"` | a JSON object (key order kept in the local encoding) |
//! | any other `Dictionary` | `{"$t":"Dictionary","v":[[key, value], ...]}` |
//! | `StringName`, `NodePath` | `{"$t":"StringName","v":"text"}` |
//! | math types (`Vector2`, `Vector3`, `Vector4`, `Rect2`, `Transform2D`, `Basis`, `Transform3D`, `Quaternion`, `Plane`, `AABB`, `Projection`, `Color`) | `{"$t":"Vector3","v":[10.0,0.0,20.0]}`, components in the order documented on [`Value`] |
//! | integer vectors (`Vector2i`, `Vector3i`, `Vector4i`, `Rect2i`) | `{"$t":"Vector2i","v":[1,2]}` |
//! | `PackedByteArray` | `{"$t":"PackedByteArray","v":"<base64, standard alphabet, padded>"}` |
//! | `PackedInt32Array`, `PackedInt64Array`, `PackedFloat32Array`, `PackedFloat64Array`, `PackedStringArray` | `{"$t":"PackedInt32Array","v":[1,2,3]}` |
//! | `PackedVector2Array`, `PackedVector3Array`, `PackedVector4Array`, `PackedColorArray` | flat component list: `{"$t":"PackedVector2Array","v":[x0,y0,x1,y1]}` |
//!
//! A non-finite component inside a math type or float array is written as the string `"nan"`,
//! `"inf"` or `"-inf"`. Decoding accepts integers where floats are expected (hand-written JSON),
//! but never the reverse, and rejects unknown tags, wrong lengths and out-of-range integers with a
//! [`CodecError`].

use std::fmt;

use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::Value;

const TAG: &str = "$t";
const PAYLOAD: &str = "v";

/// Why bytes could not be decoded into a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid save data: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

fn err<T>(message: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(message.into()))
}

/// Encodes a value as tagged JSON bytes.
pub fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(&Encoded(value)).expect("encoding a Value cannot fail")
}

/// Decodes tagged JSON bytes produced by [`encode`] (or by any JSON tool that kept the tags).
pub fn decode(bytes: &[u8]) -> Result<Value, CodecError> {
    let json: Json = serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))?;
    from_ordered(json)
}

/// The tagged encoding as a `serde_json::Value` (object key order follows serde_json's map).
pub fn to_json(value: &Value) -> serde_json::Value {
    serde_json::to_value(Encoded(value)).expect("encoding a Value cannot fail")
}

/// Decodes a tagged `serde_json::Value`, e.g. the `data` field of a loaded save.
pub fn from_json(json: &serde_json::Value) -> Result<Value, CodecError> {
    from_ordered(Json::from(json))
}

/// Converts plain JSON (API results such as a user) without interpreting `$t` tags.
pub fn plain_from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => number_value(n),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => {
            Value::Array(items.iter().map(plain_from_json).collect())
        }
        serde_json::Value::Object(map) => Value::Dictionary(
            map.iter()
                .map(|(k, v)| (Value::String(k.clone()), plain_from_json(v)))
                .collect(),
        ),
    }
}

fn number_value(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Int(i),
        None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Serializes a [`Value`] in the tagged encoding; lets callers embed save data in a request
/// body without building an intermediate tree.
pub struct Encoded<'a>(pub &'a Value);

/// Deserializes the tagged encoding straight from a JSON document, keeping object key order.
pub struct Decoded(pub Value);

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        from_ordered(json).map(Decoded).map_err(de::Error::custom)
    }
}

struct Tagged<'a, T: Serialize + ?Sized>(&'static str, &'a T);

impl<T: Serialize + ?Sized> Serialize for Tagged<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(TAG, self.0)?;
        map.serialize_entry(PAYLOAD, self.1)?;
        map.end()
    }
}

/// One float component: a number when finite, else `"nan"` / `"inf"` / `"-inf"`.
struct Component(f64);

impl Serialize for Component {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        if f.is_finite() {
            s.serialize_f64(f)
        } else {
            s.serialize_str(non_finite_name(f))
        }
    }
}

fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "nan"
    } else if f > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

struct Floats<'a, T>(&'a [T]);

impl<T: Copy + Into<f64>> Serialize for Floats<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for f in self.0 {
            seq.serialize_element(&Component((*f).into()))?;
        }
        seq.end()
    }
}

/// Flattens `[[f64; N]]` into one component list.
struct FlatFloats<'a, const N: usize>(&'a [[f64; N]]);

impl<const N: usize> Serialize for FlatFloats<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() * N))?;
        for item in self.0 {
            for f in item {
                seq.serialize_element(&Component(*f))?;
            }
        }
        seq.end()
    }
}

struct Pairs<'a>(&'a [(Value, Value)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0 {
            seq.serialize_element(&(Encoded(k), Encoded(v)))?;
        }
        seq.end()
    }
}

struct Items<'a>(&'a [Value]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&Encoded(v))?;
        }
        seq.end()
    }
}

fn is_plain_object(pairs: &[(Value, Value)]) -> bool {
    pairs
        .iter()
        .all(|(k, _)| matches!(k, Value::String(s) if s != TAG))
}

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(f) => Tagged("float", non_finite_name(*f)).serialize(s),
            Value::String(text) => s.serialize_str(text),
            Value::StringName(text) => Tagged("StringName", text.as_str()).serialize(s),
            Value::NodePath(text) => Tagged("NodePath", text.as_str()).serialize(s),
            Value::Vector2(v) => Tagged("Vector2", &Floats(v)).serialize(s),
            Value::Vector2i(v) => Tagged("Vector2i", v).serialize(s),
            Value::Vector3(v) => Tagged("Vector3", &Floats(v)).serialize(s),
            Value::Vector3i(v) => Tagged("Vector3i", v).serialize(s),
            Value::Vector4(v) => Tagged("Vector4", &Floats(v)).serialize(s),
            Value::Vector4i(v) => Tagged("Vector4i", v).serialize(s),
            Value::Rect2(v) => Tagged("Rect2", &Floats(v)).serialize(s),
            Value::Rect2i(v) => Tagged("Rect2i", v).serialize(s),
            Value::Transform2D(v) => Tagged("Transform2D", &Floats(v)).serialize(s),
            Value::Basis(v) => Tagged("Basis", &Floats(v)).serialize(s),
            Value::Transform3D(v) => Tagged("Transform3D", &Floats(v)).serialize(s),
            Value::Quaternion(v) => Tagged("Quaternion", &Floats(v)).serialize(s),
            Value::Plane(v) => Tagged("Plane", &Floats(v)).serialize(s),
            Value::Aabb(v) => Tagged("AABB", &Floats(v)).serialize(s),
            Value::Projection(v) => Tagged("Projection", &Floats(v)).serialize(s),
            Value::Color(v) => Tagged("Color", &Floats(v)).serialize(s),
            Value::PackedByteArray(bytes) => {
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                Tagged("PackedByteArray", text.as_str()).serialize(s)
            }
            Value::PackedInt32Array(v) => Tagged("PackedInt32Array", v).serialize(s),
            Value::PackedInt64Array(v) => Tagged("PackedInt64Array", v).serialize(s),
            Value::PackedFloat32Array(v) => {
                Tagged("PackedFloat32Array", &Floats(v.as_slice())).serialize(s)
            }
            Value::PackedFloat64Array(v) => {
                Tagged("PackedFloat64Array", &Floats(v.as_slice())).serialize(s)
            }
            Value::PackedStringArray(v) => Tagged("PackedStringArray", v).serialize(s),
            Value::PackedVector2Array(v) => {
                Tagged("PackedVector2Array", &FlatFloats(v)).serialize(s)
            }
            Value::PackedVector3Array(v) => {
                Tagged("PackedVector3Array", &FlatFloats(v)).serialize(s)
            }
            Value::PackedVector4Array(v) => {
                Tagged("PackedVector4Array", &FlatFloats(v)).serialize(s)
            }
            Value::PackedColorArray(v) => Tagged("PackedColorArray", &FlatFloats(v)).serialize(s),
            Value::Array(items) => Items(items).serialize(s),
            Value::Dictionary(pairs) if is_plain_object(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    if let Value::String(key) = k {
                        map.serialize_entry(key, &Encoded(v))?;
                    }
                }
                map.end()
            }
            Value::Dictionary(pairs) => Tagged("Dictionary", &Pairs(pairs)).serialize(s),
        }
    }
}

/// JSON as parsed, with object key order kept (serde_json's map may sort keys).
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers beyond i64 (never written by the encoder).
    Big(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Json::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Json::Big(u)
                } else {
                    Json::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Json::Str(s.clone()),
            serde_json::Value::Array(a) => Json::Arr(a.iter().map(Json::from).collect()),
            serde_json::Value::Object(m) => {
                Json::Obj(m.iter().map(|(k, v)| (k.clone(), Json::from(v))).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(i64::try_from(v).map_or(Json::Big(v), Json::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    entries.push((k, v));
                }
                Ok(Json::Obj(entries))
            }
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

fn from_ordered(json: Json) -> Result<Value, CodecError> {
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(b),
        Json::Int(i) => Value::Int(i),
        Json::Big(u) => Value::Float(u as f64),
        Json::Float(f) => Value::Float(f),
        Json::Str(s) => Value::String(s),
        Json::Arr(items) => Value::Array(
            items
                .into_iter()
                .map(from_ordered)
                .collect::<Result<_, _>>()?,
        ),
        Json::Obj(entries) => {
            if entries.iter().any(|(k, _)| k == TAG) {
                return decode_tagged(entries);
            }
            Value::Dictionary(
                entries
                    .into_iter()
                    .map(|(k, v)| Ok((Value::String(k), from_ordered(v)?)))
                    .collect::<Result<_, CodecError>>()?,
            )
        }
    })
}

fn decode_tagged(entries: Vec<(String, Json)>) -> Result<Value, CodecError> {
    let mut tag = None;
    let mut payload = None;
    for (k, v) in entries {
        match (k.as_str(), v) {
            (TAG, Json::Str(t)) => tag = Some(t),
            (TAG, _) => return err("`$t` must be a string"),
            (PAYLOAD, v) => payload = Some(v),
            (other, _) => return err(format!("unexpected key `{other}` in a tagged value")),
        }
    }
    let tag = tag.expect("caller checked the tag key");
    let Some(v) = payload else {
        return err(format!("tagged `{tag}` has no `v`"));
    };
    Ok(match tag.as_str() {
        "float" => match v {
            Json::Str(s) => Value::Float(parse_non_finite(&s)?),
            _ => return err("`float` payload must be \"nan\", \"inf\" or \"-inf\""),
        },
        "StringName" => Value::StringName(string(v, &tag)?),
        "NodePath" => Value::NodePath(string(v, &tag)?),
        "Vector2" => Value::Vector2(fixed_floats(v, &tag)?),
        "Vector2i" => Value::Vector2i(fixed_i32s(v, &tag)?),
        "Vector3" => Value::Vector3(fixed_floats(v, &tag)?),
        "Vector3i" => Value::Vector3i(fixed_i32s(v, &tag)?),
        "Vector4" => Value::Vector4(fixed_floats(v, &tag)?),
        "Vector4i" => Value::Vector4i(fixed_i32s(v, &tag)?),
        "Rect2" => Value::Rect2(fixed_floats(v, &tag)?),
        "Rect2i" => Value::Rect2i(fixed_i32s(v, &tag)?),
        "Transform2D" => Value::Transform2D(fixed_floats(v, &tag)?),
        "Basis" => Value::Basis(fixed_floats(v, &tag)?),
        "Transform3D" => Value::Transform3D(fixed_floats(v, &tag)?),
        "Quaternion" => Value::Quaternion(fixed_floats(v, &tag)?),
        "Plane" => Value::Plane(fixed_floats(v, &tag)?),
        "AABB" => Value::Aabb(fixed_floats(v, &tag)?),
        "Projection" => Value::Projection(fixed_floats(v, &tag)?),
        "Color" => Value::Color(fixed_floats(v, &tag)?),
        "PackedByteArray" => {
            let text = string(v, &tag)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| CodecError(format!("PackedByteArray: {e}")))?;
            Value::PackedByteArray(bytes)
        }
        "PackedInt32Array" => Value::PackedInt32Array(
            array(v, &tag)?
                .into_iter()
                .map(|j| int_i32(j, &tag))
                .collect::<Result<_, _>>()?,
        ),
        "PackedInt64Array" => Value::PackedInt64Array(
            array(v, &tag)?
                .into_iter()
                .map(|j| int_i64(j, &tag))
                .collect::<Result<_, _>>()?,
        ),
        "PackedFloat32Array" => {
            Value::PackedFloat32Array(floats(v, &tag)?.into_iter().map(|f| f as f32).collect())
        }
        "PackedFloat64Array" => Value::PackedFloat64Array(floats(v, &tag)?),
        "PackedStringArray" => Value::PackedStringArray(
            array(v, &tag)?
                .into_iter()
                .map(|j| string(j, &tag))
                .collect::<Result<_, _>>()?,
        ),
        "PackedVector2Array" => Value::PackedVector2Array(chunks(v, &tag)?),
        "PackedVector3Array" => Value::PackedVector3Array(chunks(v, &tag)?),
        "PackedVector4Array" => Value::PackedVector4Array(chunks(v, &tag)?),
        "PackedColorArray" => Value::PackedColorArray(chunks(v, &tag)?),
        "Dictionary" => {
            let mut pairs = Vec::new();
            for pair in array(v, &tag)? {
                match pair {
                    Json::Arr(kv) if kv.len() == 2 => {
                        let mut kv = kv.into_iter();
                        let k = from_ordered(kv.next().expect("len 2"))?;
                        let v = from_ordered(kv.next().expect("len 2"))?;
                        pairs.push((k, v));
                    }
                    _ => return err("Dictionary entries must be [key, value] pairs"),
                }
            }
            Value::Dictionary(pairs)
        }
        other => return err(format!("unknown type tag `{other}`")),
    })
}

fn parse_non_finite(s: &str) -> Result<f64, CodecError> {
    match s {
        "nan" => Ok(f64::NAN),
        "inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        _ => err(format!("`{s}` is not a number")),
    }
}

fn string(v: Json, tag: &str) -> Result<String, CodecError> {
    match v {
        Json::Str(s) => Ok(s),
        _ => err(format!("{tag}: expected a string")),
    }
}

fn array(v: Json, tag: &str) -> Result<Vec<Json>, CodecError> {
    match v {
        Json::Arr(items) => Ok(items),
        _ => err(format!("{tag}: expected an array")),
    }
}

fn float(v: Json, tag: &str) -> Result<f64, CodecError> {
    match v {
        Json::Float(f) => Ok(f),
        Json::Int(i) => Ok(i as f64),
        Json::Big(u) => Ok(u as f64),
        Json::Str(s) => parse_non_finite(&s),
        _ => err(format!("{tag}: expected numbers")),
    }
}

fn floats(v: Json, tag: &str) -> Result<Vec<f64>, CodecError> {
    array(v, tag)?.into_iter().map(|j| float(j, tag)).collect()
}

fn fixed_floats<const N: usize>(v: Json, tag: &str) -> Result<[f64; N], CodecError> {
    let list = floats(v, tag)?;
    let len = list.len();
    list.try_into()
        .or_else(|_| err(format!("{tag}: expected {N} components, got {len}")))
}

fn chunks<const N: usize>(v: Json, tag: &str) -> Result<Vec<[f64; N]>, CodecError> {
    let list = floats(v, tag)?;
    if list.len() % N != 0 {
        return err(format!("{tag}: length must be a multiple of {N}"));
    }
    Ok(list
        .chunks_exact(N)
        .map(|c| c.try_into().expect("exact chunk"))
        .collect())
}

fn int_i64(v: Json, tag: &str) -> Result<i64, CodecError> {
    match v {
        Json::Int(i) => Ok(i),
        _ => err(format!("{tag}: expected integers")),
    }
}

fn int_i32(v: Json, tag: &str) -> Result<i32, CodecError> {
    let i = int_i64(v, tag)?;
    i32::try_from(i).or_else(|_| err(format!("{tag}: {i} does not fit in 32 bits")))
}

fn fixed_i32s<const N: usize>(v: Json, tag: &str) -> Result<[i32; N], CodecError> {
    let list = array(v, tag)?
        .into_iter()
        .map(|j| int_i32(j, tag))
        .collect::<Result<Vec<_>, _>>()?;
    let len = list.len();
    list.try_into()
        .or_else(|_| err(format!("{tag}: expected {N} components, got {len}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact equality that also holds for NaN and tells -0.0 from 0.0: `{:?}` prints floats
    /// with their shortest exact representation.
    fn same(a: &Value, b: &Value) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    fn round_trip(value: &Value) -> Value {
        let bytes = encode(value);
        let back = decode(&bytes).unwrap_or_else(|e| {
            panic!("{e} for {}", String::from_utf8_lossy(&bytes));
        });
        assert!(
            same(value, &back),
            "{value:?} -> {} -> {back:?}",
            String::from_utf8_lossy(&bytes)
        );
        // Through serde_json::Value too, as the server re-serializes the data it stores.
        let via_json = from_json(&serde_json::from_slice(&bytes).unwrap()).unwrap();
        let sorted_ok = match (&via_json, value) {
            (Value::Dictionary(a), Value::Dictionary(b)) => a.len() == b.len(),
            _ => same(&via_json, value),
        };
        assert!(sorted_ok, "{value:?} via serde_json::Value -> {via_json:?}");
        back
    }

    fn every_variant() -> Vec<Value> {
        vec![
            Value::Nil,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(5),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Float(5.0),
            Value::Float(0.1),
            Value::Float(-0.0),
            Value::Float(1e300),
            Value::Float(f64::MIN_POSITIVE),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::String(String::new()),
            Value::String("héllo 🌍 \"quoted\" \\ \n".into()),
            Value::StringName("player_name".into()),
            Value::NodePath("../Player:position".into()),
            Value::Vector2([1.5, -2.0]),
            Value::Vector2i([i32::MIN, i32::MAX]),
            Value::Vector3([10.0, 0.0, 20.0]),
            Value::Vector3i([1, 2, 3]),
            Value::Vector4([1.0, 2.0, 3.0, f64::NAN]),
            Value::Vector4i([-1, 0, 1, 2]),
            Value::Rect2([0.0, 0.0, 640.0, 480.0]),
            Value::Rect2i([1, 2, 3, 4]),
            Value::Transform2D([1.0, 0.0, 0.0, 1.0, 5.0, 6.0]),
            Value::Basis([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
            Value::Transform3D([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 7.0, 8.0, 9.0]),
            Value::Quaternion([0.0, 0.0, 0.0, 1.0]),
            Value::Plane([0.0, 1.0, 0.0, -3.5]),
            Value::Aabb([0.0, 0.0, 0.0, 1.0, 2.0, 3.0]),
            Value::Projection(std::array::from_fn(|i| i as f64 * 0.5)),
            Value::Color([1.0, 0.5, 0.25, f64::INFINITY]),
            Value::PackedByteArray(vec![]),
            Value::PackedByteArray((0..=255).collect()),
            Value::PackedInt32Array(vec![]),
            Value::PackedInt32Array(vec![i32::MIN, 0, i32::MAX]),
            Value::PackedInt64Array(vec![i64::MIN, -1, i64::MAX]),
            Value::PackedFloat32Array(vec![]),
            Value::PackedFloat32Array(vec![0.1, -0.0, f32::MAX, f32::NAN, f32::NEG_INFINITY]),
            Value::PackedFloat64Array(vec![0.1, -0.0, f64::MAX, f64::NAN]),
            Value::PackedStringArray(vec![]),
            Value::PackedStringArray(vec!["a".into(), String::new(), "ü".into()]),
            Value::PackedVector2Array(vec![]),
            Value::PackedVector2Array(vec![[1.0, 2.0], [3.0, 4.0]]),
            Value::PackedVector3Array(vec![[1.0, 2.0, 3.0]]),
            Value::PackedVector4Array(vec![[1.0, 2.0, 3.0, 4.0]]),
            Value::PackedColorArray(vec![[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.5]]),
            Value::Array(vec![]),
            Value::Dictionary(vec![]),
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for value in every_variant() {
            round_trip(&value);
        }
    }

    #[test]
    fn int_and_float_stay_distinct() {
        assert_eq!(encode(&Value::Int(5)), b"5");
        assert_eq!(encode(&Value::Float(5.0)), b"5.0");
        assert_eq!(decode(b"5").unwrap(), Value::Int(5));
        assert_eq!(decode(b"5.0").unwrap(), Value::Float(5.0));
        assert_eq!(decode(b"-0.0").unwrap().clone(), Value::Float(-0.0));
        match decode(b"-0.0").unwrap() {
            Value::Float(f) => assert!(f.is_sign_negative()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nested_values_round_trip_and_keep_key_order() {
        let all = every_variant();
        let nested = Value::Dictionary(vec![
            (Value::String("zeta".into()), Value::Int(1)),
            (Value::String("alpha".into()), Value::Array(all.clone())),
            (
                Value::String("inner".into()),
                Value::dict([("position", Value::Vector3([10.0, 0.0, 20.0]))]),
            ),
        ]);
        let back = round_trip(&nested);
        assert!(same(&back, &nested));
        let deep = Value::Array(vec![Value::Array(vec![Value::Dictionary(
            all.iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i as i64), v.clone()))
                .collect(),
        )])]);
        round_trip(&deep);
    }

    #[test]
    fn seed_example_has_the_documented_shape() {
        let save = Value::dict([
            ("level", Value::Int(5)),
            ("position", Value::Vector3([10.0, 0.0, 20.0])),
        ]);
        assert_eq!(
            String::from_utf8(encode(&save)).unwrap(),
            r#"{"level":5,"position":{"$t":"Vector3","v":[10.0,0.0,20.0]}}"#
        );
    }

    #[test]
    fn dictionaries_needing_tags_are_tagged() {
        let keyed = Value::Dictionary(vec![
            (Value::Int(1), Value::String("one".into())),
            (Value::Vector2i([1, 2]), Value::Nil),
            (Value::StringName("sn".into()), Value::Bool(true)),
        ]);
        let text = String::from_utf8(encode(&keyed)).unwrap();
        assert!(
            text.starts_with(r#"{"$t":"Dictionary","v":[[1,"one"]"#),
            "{text}"
        );
        round_trip(&keyed);
        // A plain object that happens to use the tag key must not be read back as a tag.
        let sneaky = Value::dict([
            ("$t", Value::String("Vector2".into())),
            ("v", Value::Array(vec![])),
        ]);
        let text = String::from_utf8(encode(&sneaky)).unwrap();
        assert!(text.contains(r#""$t":"Dictionary""#), "{text}");
        round_trip(&sneaky);
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let cases: &[&[u8]] = &[
            b"",
            b"{",
            b"[1,2",
            br#"{"$t":"Vector3","v":[1,2]}"#,
            br#"{"$t":"Vector3","v":[1,2,"x"]}"#,
            br#"{"$t":"Vector2i","v":[1.5,2]}"#,
            br#"{"$t":"Vector2i","v":[1,4294967296]}"#,
            br#"{"$t":"Nope","v":1}"#,
            br#"{"$t":"Vector2"}"#,
            br#"{"$t":5,"v":[1,2]}"#,
            br#"{"$t":"Vector2","v":[1,2],"extra":1}"#,
            br#"{"$t":"PackedByteArray","v":"not base64!"}"#,
            br#"{"$t":"PackedVector2Array","v":[1,2,3]}"#,
            br#"{"$t":"PackedStringArray","v":[1]}"#,
            br#"{"$t":"Dictionary","v":[[1]]}"#,
            br#"{"$t":"float","v":"NaNs"}"#,
            br#"{"$t":"StringName","v":[]}"#,
            br#"{"a":{"$t":"Color","v":{}}}"#,
        ];
        for bytes in cases {
            let result = decode(bytes);
            assert!(
                result.is_err(),
                "{} decoded to {result:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn plain_json_conversion_ignores_tags() {
        let json = serde_json::json!({"id": "u1", "n": 3, "f": 1.5, "tags": ["a"], "x": {"$t": "Vector2", "v": [1, 2]}, "none": null});
        let value = plain_from_json(&json);
        assert_eq!(value.get("id"), Some(&Value::String("u1".into())));
        assert_eq!(value.get("n"), Some(&Value::Int(3)));
        assert_eq!(value.get("f"), Some(&Value::Float(1.5)));
        assert_eq!(value.get("none"), Some(&Value::Nil));
        assert!(matches!(value.get("x"), Some(Value::Dictionary(_))));
        // The tagged decoding of the same JSON restores the Vector2.
        let tagged = from_json(&json).unwrap();
        assert_eq!(tagged.get("x"), Some(&Value::Vector2([1.0, 2.0])));
        // And to_json is the encoding as a serde_json::Value.
        assert_eq!(
            to_json(&Value::Vector2i([1, 2])),
            serde_json::json!({"$t": "Vector2i", "v": [1, 2]})
        );
    }
}
