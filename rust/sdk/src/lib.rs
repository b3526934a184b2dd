//! AeThex Cloud client SDK core.
