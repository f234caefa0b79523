//! gcov `.gcda` files (validated by the writer, read by the report).

/// "gcda" as libgcov writes its magic: a native-endian u32.
pub const MAGIC: u32 = 0x6763_6461;
