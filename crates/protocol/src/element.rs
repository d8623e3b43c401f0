//! Typed access to the fixed-size elements of a tensor buffer.

use crate::DataType;

/// A Rust type that is the element type of a fixed-size V2 datatype.
///
/// Tensors keep their data as little-endian bytes; this trait converts one element at a time,
/// so it works on unaligned network buffers.
pub trait Element: Copy + Send + Sync + 'static {
    /// The V2 datatype this type stands for.
    const DATATYPE: DataType;
    /// Reads one element from exactly `size_of::<Self>()` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $dt:expr) => {
        impl Element for $t {
            const DATATYPE: DataType = $dt;
            fn read_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

element!(u8, DataType::Uint8);
element!(u16, DataType::Uint16);
element!(u32, DataType::Uint32);
element!(u64, DataType::Uint64);
element!(i8, DataType::Int8);
element!(i16, DataType::Int16);
element!(i32, DataType::Int32);
element!(i64, DataType::Int64);
element!(half::f16, DataType::Fp16);
element!(half::bf16, DataType::Bf16);
element!(f32, DataType::Fp32);
element!(f64, DataType::Fp64);

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}
