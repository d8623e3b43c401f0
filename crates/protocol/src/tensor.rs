//! [`Tensor`]: a named, typed, shaped, contiguous buffer.

use bytes::Bytes;

use crate::{DataType, Element, Parameters, ProtocolError};

/// A named tensor: datatype, shape and one contiguous row-major little-endian buffer.
///
/// `BYTES` tensors keep the raw form of the binary extension in `data`: for each element a
/// 4-byte little-endian length followed by the bytes. A `Tensor` built by [`Tensor::new`] (and so
/// by every decoder) always has data that matches its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions; their product is the element count.
    pub shape: Vec<u64>,
    /// The elements, little-endian, row-major, no padding.
    pub data: Bytes,
    /// Tensor-level parameters, kept as received.
    pub parameters: Parameters,
}

impl Tensor {
    /// Builds a tensor after checking that `data` holds exactly the elements `shape` asks for.
    pub fn new(
        name: impl Into<String>,
        datatype: DataType,
        shape: Vec<u64>,
        data: Bytes,
    ) -> Result<Self, ProtocolError> {
        let name = name.into();
        let count = element_count(&name, &shape)?;
        check_data(&name, datatype, count, &data)?;
        Ok(Tensor {
            name,
            datatype,
            shape,
            data,
            parameters: Parameters::new(),
        })
    }

    /// Builds a tensor from typed values.
    pub fn from_values<T: Element>(
        name: impl Into<String>,
        shape: Vec<u64>,
        values: &[T],
    ) -> Result<Self, ProtocolError> {
        let mut data = Vec::with_capacity(std::mem::size_of_val(values));
        for v in values {
            v.write_le(&mut data);
        }
        Tensor::new(name, T::DATATYPE, shape, data.into())
    }

    /// Builds a `BYTES` tensor from its elements.
    pub fn from_byte_strings<I, B>(
        name: impl Into<String>,
        shape: Vec<u64>,
        elements: I,
    ) -> Result<Self, ProtocolError>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let name = name.into();
        let mut data = Vec::new();
        for e in elements {
            let e = e.as_ref();
            let len = u32::try_from(e.len())
                .map_err(|_| ProtocolError::tensor(&name, "a BYTES element is over 4 GiB"))?;
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(e);
        }
        Tensor::new(name, DataType::Bytes, shape, data.into())
    }

    /// Number of elements (the product of the shape).
    pub fn element_count(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Copies the elements out as `T`; fails if `T` is not this tensor's datatype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, ProtocolError> {
        if T::DATATYPE != self.datatype {
            return Err(ProtocolError::tensor(
                &self.name,
                format!("expected datatype {}, got {}", T::DATATYPE, self.datatype),
            ));
        }
        let size = std::mem::size_of::<T>();
        Ok(self.data.chunks_exact(size).map(T::read_le).collect())
    }

    /// Iterates over the elements of a `BYTES` tensor (empty for other datatypes).
    pub fn byte_strings(&self) -> ByteStrings<'_> {
        ByteStrings {
            rest: if self.datatype == DataType::Bytes {
                &self.data
            } else {
                &[]
            },
        }
    }
}

/// Iterator over the elements of a `BYTES` buffer (4-byte little-endian length, then bytes).
#[derive(Debug, Clone)]
pub struct ByteStrings<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ByteStrings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (elem, rest) = rest.split_at_checked(len)?;
        self.rest = rest;
        Some(elem)
    }
}

/// The element count of `shape`, computed without overflow.
pub(crate) fn element_count(name: &str, shape: &[u64]) -> Result<u64, ProtocolError> {
    shape.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(d).ok_or_else(|| {
            ProtocolError::tensor(name, format!("shape {shape:?} has too many elements"))
        })
    })
}

/// Checks that `data` holds exactly `count` elements of `datatype`.
pub(crate) fn check_data(
    name: &str,
    datatype: DataType,
    count: u64,
    data: &[u8],
) -> Result<(), ProtocolError> {
    match datatype.element_size() {
        Some(size) => {
            let expected = count.checked_mul(size as u64);
            if expected != Some(data.len() as u64) {
                return Err(ProtocolError::tensor(
                    name,
                    format!(
                        "{count} {datatype} elements need {} bytes, got {}",
                        expected.map_or_else(|| "more than 2^64".to_owned(), |e| e.to_string()),
                        data.len()
                    ),
                ));
            }
        }
        None => {
            let found = count_byte_strings(name, data)?;
            if found != count {
                return Err(ProtocolError::tensor(
                    name,
                    format!("shape has {count} elements but the BYTES data holds {found}"),
                ));
            }
        }
    }
    Ok(())
}

/// Counts the elements of a raw `BYTES` buffer, checking every length prefix.
fn count_byte_strings(name: &str, data: &[u8]) -> Result<u64, ProtocolError> {
    let mut rest = data;
    let mut count = 0u64;
    while !rest.is_empty() {
        let offset = data.len() - rest.len();
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(ProtocolError::tensor(
                name,
                format!("BYTES element {count} at byte {offset}: truncated length prefix"),
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((_, tail)) = tail.split_at_checked(len) else {
            return Err(ProtocolError::tensor(
                name,
                format!(
                    "BYTES element {count} at byte {offset}: length {len} is beyond the data ({} bytes left)",
                    tail.len()
                ),
            ));
        };
        rest = tail;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_size_against_shape() {
        let t = Tensor::new("x", DataType::Fp32, vec![2], Bytes::from(vec![0u8; 8]));
        assert!(t.is_ok());
        let err = Tensor::new("x", DataType::Fp32, vec![3], Bytes::from(vec![0u8; 8]));
        assert!(err.is_err());
        let huge = Tensor::new("x", DataType::Fp64, vec![u64::MAX, 2], Bytes::new());
        assert!(huge.is_err());
        let huge = Tensor::new("x", DataType::Fp64, vec![u64::MAX / 4], Bytes::new());
        assert!(huge.is_err());
    }

    #[test]
    fn byte_strings_round_trip() {
        let t = Tensor::from_byte_strings("s", vec![2], ["hello", "w\0rld"]).unwrap();
        assert_eq!(t.data.len(), 18);
        let items: Vec<&[u8]> = t.byte_strings().collect();
        assert_eq!(items, vec![&b"hello"[..], &b"w\0rld"[..]]);
        let bad = Tensor::new(
            "s",
            DataType::Bytes,
            vec![1],
            Bytes::from_static(&[9, 0, 0, 0, 1]),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn typed_values_round_trip() {
        let t = Tensor::from_values("v", vec![3], &[1.5f32, -2.0, 3.25]).unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
        assert!(t.to_vec::<f64>().is_err());
    }
}
