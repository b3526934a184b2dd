//! Cloud saves: `/api/v1/saves/{user_id}/*`. `me` stands for the caller's own id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One slot's current version, as listed and as answered after a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveSlotInfo {
    pub slot: String,
    /// Starts at 1 and grows by one with every write, restore or delete of the slot.
    pub version: i64,
    /// Bytes of `data` as serialized JSON (before compression).
    pub size: i64,
    /// Unix milliseconds of this version.
    pub updated_at: i64,
    /// Lowercase hex SHA-256 of the serialized `data`.
    pub checksum: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
}

/// `POST /api/v1/saves/{user_id}`: write a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WriteSaveRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^(?!history$)[A-Za-z0-9_][A-Za-z0-9_.-]*$"
        )
    )]
    pub slot: String,
    /// The save itself: any JSON value (the SDK sends its type-tagged encoding).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// The version this write was based on; `None` or `0` means "the slot must not exist yet".
    /// A mismatch answers 409 `save_conflict` with `details.current`.
    #[serde(default, deserialize_with = "crate::int::option_i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub base_version: Option<i64>,
}

/// `GET /api/v1/saves/{user_id}/{slot}`; the version is also the `ETag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveData {
    #[serde(flatten)]
    pub info: SaveSlotInfo,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveList {
    pub slots: Vec<SaveSlotInfo>,
    /// Bytes used by every kept version of every slot.
    pub used_bytes: i64,
    pub quota_bytes: i64,
}

/// One entry of a slot's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveVersionInfo {
    pub slot: String,
    pub version: i64,
    pub size: i64,
    pub created_at: i64,
    pub checksum: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    /// `write`, `restore` or `delete` (a deletion keeps no data and cannot itself be restored).
    pub kind: String,
    /// For `restore`: the version whose content this one copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveHistory {
    pub versions: Vec<SaveVersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreSaveRequest {
    /// The kept version whose content becomes the slot's new current version.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    #[serde(deserialize_with = "crate::int::i64")]
    pub version: i64,
    /// When set, the restore happens only if the slot's current version is still this one
    /// (`0` = the slot is deleted); otherwise 409 `save_conflict` as for writes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::int::option_i64"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub base_version: Option<i64>,
}

/// `details` of a 409 `save_conflict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveConflictDetails {
    /// The slot's current version; `None` when the slot does not exist or is deleted.
    pub current: Option<SaveSlotInfo>,
    /// The slot's current version number (`0` when it never existed; a deleted slot's
    /// deletion version otherwise).
    pub current_version: i64,
}
