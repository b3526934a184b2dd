//! Variant <-> [`Value`], both directions, for every `Value` variant.
//!
//! Objects, RIDs, Callables and Signals have no portable form (they are handles into the running
//! engine), so converting them fails with the path of the offending element; a null Object is `Nil`.

use aethex_sdk::Value;
use godot::builtin::{
    real, Aabb, AnyArray, AnyDictionary, Basis, Color, GString, NodePath, PackedByteArray,
    PackedColorArray, PackedFloat32Array, PackedFloat64Array, PackedInt32Array, PackedInt64Array,
    PackedStringArray, PackedVector2Array, PackedVector3Array, PackedVector4Array, Plane,
    Projection, Quaternion, Rect2, Rect2i, StringName, Transform2D, Transform3D, VarArray,
    VarDictionary, Variant, VariantType, Vector2, Vector2i, Vector3, Vector3i, Vector4, Vector4i,
};
use godot::meta::ToGodot;

/// Deeper nesting than this is treated as a cycle (Godot containers may contain themselves).
const MAX_DEPTH: usize = 128;

/// A value that cannot leave the engine, with where it was found (`data.inventory[3]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at `{}`", self.reason, self.path)
    }
}

/// Converts a Variant to a portable [`Value`]; `root` names the argument in error messages.
pub fn to_value(variant: &Variant, root: &str) -> Result<Value, Unsupported> {
    let mut path = Vec::new();
    convert_variant(variant, 0, &mut path).map_err(|reason| Unsupported {
        path: format!("{root}{}", path.into_iter().rev().collect::<String>()),
        reason,
    })
}

/// On error, `path` receives the segments from the failing element outwards.
fn convert_variant(v: &Variant, depth: usize, path: &mut Vec<String>) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH} levels (a cycle?)"));
    }
    Ok(match v.get_type() {
        VariantType::NIL => Value::Nil,
        VariantType::BOOL => Value::Bool(v.to()),
        VariantType::INT => Value::Int(v.to()),
        VariantType::FLOAT => Value::Float(v.to()),
        VariantType::STRING => Value::String(v.to::<GString>().to_string()),
        VariantType::STRING_NAME => Value::StringName(v.to::<StringName>().to_string()),
        VariantType::NODE_PATH => Value::NodePath(v.to::<NodePath>().to_string()),
        VariantType::VECTOR2 => Value::Vector2(v2(v.to())),
        VariantType::VECTOR2I => {
            let p: Vector2i = v.to();
            Value::Vector2i([p.x, p.y])
        }
        VariantType::VECTOR3 => Value::Vector3(v3(v.to())),
        VariantType::VECTOR3I => {
            let p: Vector3i = v.to();
            Value::Vector3i([p.x, p.y, p.z])
        }
        VariantType::VECTOR4 => Value::Vector4(v4(v.to())),
        VariantType::VECTOR4I => {
            let p: Vector4i = v.to();
            Value::Vector4i([p.x, p.y, p.z, p.w])
        }
        VariantType::RECT2 => {
            let r: Rect2 = v.to();
            let (p, s) = (v2(r.position), v2(r.size));
            Value::Rect2([p[0], p[1], s[0], s[1]])
        }
        VariantType::RECT2I => {
            let r: Rect2i = v.to();
            Value::Rect2i([r.position.x, r.position.y, r.size.x, r.size.y])
        }
        VariantType::TRANSFORM2D => {
            let t: Transform2D = v.to();
            let (a, b, o) = (v2(t.a), v2(t.b), v2(t.origin));
            Value::Transform2D([a[0], a[1], b[0], b[1], o[0], o[1]])
        }
        VariantType::BASIS => Value::Basis(basis_rows(v.to())),
        VariantType::TRANSFORM3D => {
            let t: Transform3D = v.to();
            let mut out = [0.0; 12];
            out[..9].copy_from_slice(&basis_rows(t.basis));
            out[9..].copy_from_slice(&v3(t.origin));
            Value::Transform3D(out)
        }
        VariantType::QUATERNION => {
            let q: Quaternion = v.to();
            Value::Quaternion([q.x, q.y, q.z, q.w].map(f64::from))
        }
        VariantType::PLANE => {
            let p: Plane = v.to();
            let n = v3(p.normal);
            Value::Plane([n[0], n[1], n[2], f64::from(p.d)])
        }
        VariantType::AABB => {
            let b: Aabb = v.to();
            let (p, s) = (v3(b.position), v3(b.size));
            Value::Aabb([p[0], p[1], p[2], s[0], s[1], s[2]])
        }
        VariantType::PROJECTION => {
            let m: Projection = v.to();
            let mut out = [0.0; 16];
            for (chunk, col) in out.chunks_exact_mut(4).zip(m.cols) {
                chunk.copy_from_slice(&v4(col));
            }
            Value::Projection(out)
        }
        VariantType::COLOR => Value::Color(color(v.to())),
        VariantType::PACKED_BYTE_ARRAY => {
            Value::PackedByteArray(v.to::<PackedByteArray>().to_vec())
        }
        VariantType::PACKED_INT32_ARRAY => {
            Value::PackedInt32Array(v.to::<PackedInt32Array>().to_vec())
        }
        VariantType::PACKED_INT64_ARRAY => {
            Value::PackedInt64Array(v.to::<PackedInt64Array>().to_vec())
        }
        VariantType::PACKED_FLOAT32_ARRAY => {
            Value::PackedFloat32Array(v.to::<PackedFloat32Array>().to_vec())
        }
        VariantType::PACKED_FLOAT64_ARRAY => {
            Value::PackedFloat64Array(v.to::<PackedFloat64Array>().to_vec())
        }
        VariantType::PACKED_STRING_ARRAY => Value::PackedStringArray(
            v.to::<PackedStringArray>()
                .as_slice()
                .iter()
                .map(GString::to_string)
                .collect(),
        ),
        VariantType::PACKED_VECTOR2_ARRAY => Value::PackedVector2Array(
            v.to::<PackedVector2Array>()
                .as_slice()
                .iter()
                .map(|p| v2(*p))
                .collect(),
        ),
        VariantType::PACKED_VECTOR3_ARRAY => Value::PackedVector3Array(
            v.to::<PackedVector3Array>()
                .as_slice()
                .iter()
                .map(|p| v3(*p))
                .collect(),
        ),
        VariantType::PACKED_VECTOR4_ARRAY => Value::PackedVector4Array(
            v.to::<PackedVector4Array>()
                .as_slice()
                .iter()
                .map(|p| v4(*p))
                .collect(),
        ),
        VariantType::PACKED_COLOR_ARRAY => Value::PackedColorArray(
            v.to::<PackedColorArray>()
                .as_slice()
                .iter()
                .map(|c| color(*c))
                .collect(),
        ),
        // AnyArray / AnyDictionary accept typed containers (`Array[int]`) as well as untyped ones.
        VariantType::ARRAY => {
            let array: AnyArray = v.to();
            let mut items = Vec::with_capacity(array.len());
            for (i, item) in array.iter_shared().enumerate() {
                match convert_variant(&item, depth + 1, path) {
                    Ok(value) => items.push(value),
                    Err(reason) => {
                        path.push(format!("[{i}]"));
                        return Err(reason);
                    }
                }
            }
            Value::Array(items)
        }
        VariantType::DICTIONARY => {
            let dict: AnyDictionary = v.to();
            let mut pairs = Vec::with_capacity(dict.len());
            for (key, item) in dict.iter_shared() {
                let segment = || match key.get_type() {
                    VariantType::STRING | VariantType::STRING_NAME => format!(".{key}"),
                    _ => format!("[{key}]"),
                };
                let key_value = match convert_variant(&key, depth + 1, path) {
                    Ok(k) => k,
                    Err(reason) => {
                        path.push(format!("{{key {}}}", segment()));
                        return Err(reason);
                    }
                };
                match convert_variant(&item, depth + 1, path) {
                    Ok(value) => pairs.push((key_value, value)),
                    Err(reason) => {
                        path.push(segment());
                        return Err(reason);
                    }
                }
            }
            Value::Dictionary(pairs)
        }
        VariantType::OBJECT if v.object_id().is_none() => Value::Nil,
        other => return Err(format!("{other:?} cannot be stored")),
    })
}

/// Converts a portable [`Value`] back to a Variant of the same Godot type.
pub fn to_variant(value: &Value) -> Variant {
    match value {
        Value::Nil => Variant::nil(),
        Value::Bool(b) => b.to_variant(),
        Value::Int(i) => i.to_variant(),
        Value::Float(f) => f.to_variant(),
        Value::String(s) => GString::from(s.as_str()).to_variant(),
        Value::StringName(s) => StringName::from(s.as_str()).to_variant(),
        Value::NodePath(s) => NodePath::from(s.as_str()).to_variant(),
        Value::Vector2(p) => vector2(p).to_variant(),
        Value::Vector2i([x, y]) => Vector2i::new(*x, *y).to_variant(),
        Value::Vector3(p) => vector3(p).to_variant(),
        Value::Vector3i([x, y, z]) => Vector3i::new(*x, *y, *z).to_variant(),
        Value::Vector4(p) => vector4(p).to_variant(),
        Value::Vector4i([x, y, z, w]) => Vector4i::new(*x, *y, *z, *w).to_variant(),
        Value::Rect2([x, y, w, h]) => {
            Rect2::new(vector2(&[*x, *y]), vector2(&[*w, *h])).to_variant()
        }
        Value::Rect2i([x, y, w, h]) => {
            Rect2i::new(Vector2i::new(*x, *y), Vector2i::new(*w, *h)).to_variant()
        }
        Value::Transform2D([ax, ay, bx, by, ox, oy]) => Transform2D::from_cols(
            vector2(&[*ax, *ay]),
            vector2(&[*bx, *by]),
            vector2(&[*ox, *oy]),
        )
        .to_variant(),
        Value::Basis(rows) => basis(rows).to_variant(),
        Value::Transform3D(m) => {
            let rows: [f64; 9] = m[..9].try_into().expect("9 basis values");
            Transform3D::new(basis(&rows), vector3(&[m[9], m[10], m[11]])).to_variant()
        }
        Value::Quaternion([x, y, z, w]) => {
            Quaternion::new(*x as real, *y as real, *z as real, *w as real).to_variant()
        }
        Value::Plane([x, y, z, d]) => Plane {
            normal: vector3(&[*x, *y, *z]),
            d: *d as real,
        }
        .to_variant(),
        Value::Aabb([x, y, z, w, h, d]) => {
            Aabb::new(vector3(&[*x, *y, *z]), vector3(&[*w, *h, *d])).to_variant()
        }
        Value::Projection(m) => {
            let col = |i: usize| vector4(&[m[i * 4], m[i * 4 + 1], m[i * 4 + 2], m[i * 4 + 3]]);
            Projection::new([col(0), col(1), col(2), col(3)]).to_variant()
        }
        Value::Color(c) => godot_color(c).to_variant(),
        Value::PackedByteArray(b) => PackedByteArray::from(b.as_slice()).to_variant(),
        Value::PackedInt32Array(a) => PackedInt32Array::from(a.as_slice()).to_variant(),
        Value::PackedInt64Array(a) => PackedInt64Array::from(a.as_slice()).to_variant(),
        Value::PackedFloat32Array(a) => PackedFloat32Array::from(a.as_slice()).to_variant(),
        Value::PackedFloat64Array(a) => PackedFloat64Array::from(a.as_slice()).to_variant(),
        Value::PackedStringArray(a) => a
            .iter()
            .map(|s| GString::from(s.as_str()))
            .collect::<PackedStringArray>()
            .to_variant(),
        Value::PackedVector2Array(a) => a
            .iter()
            .map(vector2)
            .collect::<PackedVector2Array>()
            .to_variant(),
        Value::PackedVector3Array(a) => a
            .iter()
            .map(vector3)
            .collect::<PackedVector3Array>()
            .to_variant(),
        Value::PackedVector4Array(a) => a
            .iter()
            .map(vector4)
            .collect::<PackedVector4Array>()
            .to_variant(),
        Value::PackedColorArray(a) => a
            .iter()
            .map(godot_color)
            .collect::<PackedColorArray>()
            .to_variant(),
        Value::Array(items) => items
            .iter()
            .map(to_variant)
            .collect::<VarArray>()
            .to_variant(),
        Value::Dictionary(pairs) => {
            let mut dict = VarDictionary::new();
            for (k, v) in pairs {
                dict.set(&to_variant(k), &to_variant(v));
            }
            dict.to_variant()
        }
    }
}

fn v2(p: Vector2) -> [f64; 2] {
    [p.x, p.y].map(f64::from)
}

fn v3(p: Vector3) -> [f64; 3] {
    [p.x, p.y, p.z].map(f64::from)
}

fn v4(p: Vector4) -> [f64; 4] {
    [p.x, p.y, p.z, p.w].map(f64::from)
}

fn color(c: Color) -> [f64; 4] {
    [c.r, c.g, c.b, c.a].map(f64::from)
}

fn basis_rows(b: Basis) -> [f64; 9] {
    let mut out = [0.0; 9];
    for (chunk, row) in out.chunks_exact_mut(3).zip(b.rows) {
        chunk.copy_from_slice(&v3(row));
    }
    out
}

fn vector2(p: &[f64; 2]) -> Vector2 {
    Vector2::new(p[0] as real, p[1] as real)
}

fn vector3(p: &[f64; 3]) -> Vector3 {
    Vector3::new(p[0] as real, p[1] as real, p[2] as real)
}

fn vector4(p: &[f64; 4]) -> Vector4 {
    Vector4::new(p[0] as real, p[1] as real, p[2] as real, p[3] as real)
}

fn godot_color(c: &[f64; 4]) -> Color {
    Color::from_rgba(c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32)
}

fn basis(rows: &[f64; 9]) -> Basis {
    Basis::from_rows(
        vector3(&[rows[0], rows[1], rows[2]]),
        vector3(&[rows[3], rows[4], rows[5]]),
        vector3(&[rows[6], rows[7], rows[8]]),
    )
}
