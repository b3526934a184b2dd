//! The AeThexCloud GDExtension binding.
