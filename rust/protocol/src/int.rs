//! Integer fields that also accept integral JSON floats (`3.0`, `-2e3`). JSON Schema counts
//! `3.0` as an integer, so a client built from the OpenAPI document may send one; serde alone
//! would refuse it. Use with `#[serde(deserialize_with = "crate::int::…")]`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, Error, MapAccess, Unexpected, Visitor};
use serde::Deserialize;

/// An `i64`, or a float with no fraction inside the `i64` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = Int;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 64-bit integer")
            }

            fn visit_i64<E: Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }

            fn visit_u64<E: Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }

            fn visit_f64<E: Error>(self, v: f64) -> Result<Int, E> {
                // ±2^63 are exact as f64. Both ends are open: a literal just below i64::MIN
                // rounds to -2^63. NaN fails the comparisons.
                const LIMIT: f64 = 9_223_372_036_854_775_808.0;
                if v.fract() == 0.0 && v > -LIMIT && v < LIMIT {
                    Ok(Int(v as i64))
                } else {
                    Err(E::invalid_value(Unexpected::Float(v), &self))
                }
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

pub fn i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    Int::deserialize(deserializer).map(|Int(v)| v)
}

pub fn option_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<Int>::deserialize(deserializer).map(|v| v.map(|Int(v)| v))
}

pub fn map_i64<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, i64>, D::Error> {
    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, i64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of 64-bit integers")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, Int(value))) = map.next_entry::<String, Int>()? {
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(MapVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "i64")]
        n: i64,
        #[serde(default, deserialize_with = "option_i64")]
        o: Option<i64>,
        #[serde(default, deserialize_with = "map_i64")]
        m: BTreeMap<String, i64>,
    }

    fn probe(text: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn integral_floats_are_integers() {
        let p = probe(r#"{"n": -339.0, "o": 2e3, "m": {"a": 1.0, "b": -7}}"#).unwrap();
        assert_eq!((p.n, p.o), (-339, Some(2000)));
        assert_eq!(p.m, BTreeMap::from([("a".into(), 1), ("b".into(), -7)]));
        assert_eq!(probe(r#"{"n": 5, "o": null}"#).unwrap().o, None);
        assert_eq!(probe(r#"{"n": 9223372036854775807}"#).unwrap().n, i64::MAX);
    }

    #[test]
    fn integral_floats_near_two_to_the_53_are_read_exactly() {
        // serde_json's default float parser may be one unit in the last place off: this value
        // came back as ...355.25 and was refused as a fraction (found by the contract test).
        let p = probe(r#"{"n": -1900281295479355.0, "m": {"a": 9007199254740991.0}}"#).unwrap();
        assert_eq!(p.n, -1_900_281_295_479_355);
        assert_eq!(p.m["a"], 9_007_199_254_740_991);
    }

    #[test]
    fn fractions_out_of_range_and_other_types_are_refused() {
        for text in [
            r#"{"n": 1.5}"#,
            r#"{"n": 9.3e18}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": -9223372036854775809}"#,
            r#"{"n": "1"}"#,
            r#"{"n": 1, "m": {"a": 0.5}}"#,
        ] {
            assert!(probe(text).is_err(), "{text} accepted");
        }
    }
}
