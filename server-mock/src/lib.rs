//! Scriptable mock of the AeThex Cloud API.
