//! `Value`: a portable mirror of Godot's Variant, so save data and results cross the
//! binding boundary (and the network, see the `codec` module) without Godot types.
//!
//! Floats are kept as `f64` (Godot's `float`); vector components as `f64` too so both single- and
//! double-precision Godot builds round-trip. Dictionaries keep insertion order and allow any key
//! type, as Godot's do.

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    StringName(String),
    NodePath(String),
    Vector2([f64; 2]),
    Vector2i([i32; 2]),
    Vector3([f64; 3]),
    Vector3i([i32; 3]),
    Vector4([f64; 4]),
    Vector4i([i32; 4]),
    /// position x, y, size x, y
    Rect2([f64; 4]),
    Rect2i([i32; 4]),
    /// columns x, y, origin: [x.x, x.y, y.x, y.y, o.x, o.y]
    Transform2D([f64; 6]),
    /// rows of the basis, row-major: [r0.x, r0.y, r0.z, r1.x, ...]
    Basis([f64; 9]),
    /// basis rows (row-major, 9) then origin (3)
    Transform3D([f64; 12]),
    /// x, y, z, w
    Quaternion([f64; 4]),
    /// normal x, y, z, d
    Plane([f64; 4]),
    /// position x, y, z, size x, y, z
    Aabb([f64; 6]),
    /// columns x, y, z, w, each x, y, z, w
    Projection([f64; 16]),
    /// r, g, b, a
    Color([f64; 4]),
    PackedByteArray(Vec<u8>),
    PackedInt32Array(Vec<i32>),
    PackedInt64Array(Vec<i64>),
    PackedFloat32Array(Vec<f32>),
    PackedFloat64Array(Vec<f64>),
    PackedStringArray(Vec<String>),
    PackedVector2Array(Vec<[f64; 2]>),
    PackedVector3Array(Vec<[f64; 3]>),
    PackedVector4Array(Vec<[f64; 4]>),
    PackedColorArray(Vec<[f64; 4]>),
    Array(Vec<Value>),
    /// Key/value pairs in insertion order.
    Dictionary(Vec<(Value, Value)>),
}

impl Value {
    /// A dictionary with string keys, the common shape of results.
    pub fn dict<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Dictionary(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::String(k.into()), v))
                .collect(),
        )
    }

    /// Looks up a string key in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dictionary(pairs) => pairs.iter().find_map(|(k, v)| match k {
                Value::String(s) | Value::StringName(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }
}
