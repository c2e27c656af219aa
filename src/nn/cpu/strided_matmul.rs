//! Small f32 products of strided views into slices, on the gemm crate's micro-kernels (the ones
//! candle multiplies with), for kernels that work one attention head at a time: a head's q, k and
//! v are column blocks of (seq, heads·head_dim) rows, and a transposed operand is the same
//! elements with the strides swapped, so no operand is copied or transposed first.

/// Where a matrix's elements lie in a slice: element (r, c) at `offset + r·row_stride +
/// c·col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    /// `rows` × `cols` stored row by row, `row_stride` apart, from `offset`.
    pub fn rows(offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            offset,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose: the same elements, the strides swapped.
    pub fn t(self) -> Self {
        Self {
            offset: self.offset,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Panics unless every element lies inside a slice of `len` elements.
    fn check_within(&self, len: usize, what: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last =
            self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        assert!(
            last < len,
            "{what}: view ends at {last}, past the slice's {len} elements"
        );
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, on one thread (callers run one
/// product per head, already in parallel). Panics on mismatched shapes or a view outside its
/// slice.
pub fn matmul(
    dst: &mut [f32],
    d: View,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
    accumulate: bool,
) {
    assert_eq!(
        (l.rows, r.cols),
        (d.rows, d.cols),
        "dst is lhs.rows × rhs.cols"
    );
    assert_eq!(l.cols, r.rows, "lhs.cols = rhs.rows");
    d.check_within(dst.len(), "dst");
    l.check_within(lhs.len(), "lhs");
    r.check_within(rhs.len(), "rhs");
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if l.cols == 0 {
        if !accumulate {
            for row in 0..d.rows {
                for col in 0..d.cols {
                    dst[d.offset + row * d.row_stride + col * d.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    let s = |x: usize| x as isize;
    // SAFETY: every element of the three views lies inside its slice (checked above), `dst`
    // is borrowed mutably and so overlaps neither operand, and gemm reads `dst` only when
    // `read_dst` (accumulate) is set.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr().add(d.offset),
            s(d.col_stride),
            s(d.row_stride),
            accumulate,
            lhs.as_ptr().add(l.offset),
            s(l.col_stride),
            s(l.row_stride),
            rhs.as_ptr().add(r.offset),
            s(r.col_stride),
            s(r.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(dst: &mut [f32], d: View, lhs: &[f32], l: View, rhs: &[f32], r: View, acc: bool) {
        for i in 0..d.rows {
            for j in 0..d.cols {
                let mut sum = 0f64;
                for c in 0..l.cols {
                    let a = lhs[l.offset + i * l.row_stride + c * l.col_stride];
                    let b = rhs[r.offset + c * r.row_stride + j * r.col_stride];
                    sum += a as f64 * b as f64;
                }
                let at = d.offset + i * d.row_stride + j * d.col_stride;
                dst[at] = if acc {
                    dst[at] + sum as f32
                } else {
                    sum as f32
                };
            }
        }
    }

    /// Head-sized blocks of wider rows, transposed operands, accumulation and empty inner
    /// dimensions, on odd sizes, against a loop in f64.
    #[test]
    fn matches_a_loop_on_strided_and_transposed_views() {
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 31 + seed * 17) % 23) as f32 - 11.0) / 7.0)
                .collect()
        };
        for (m, n, k) in [(1, 1, 1), (7, 5, 3), (37, 29, 17), (50, 32, 50), (3, 4, 0)] {
            let width = 3 * (m.max(n).max(k) + 2);
            for (lt, rt, acc) in [
                (false, false, false),
                (true, false, true),
                (false, true, true),
                (true, true, false),
            ] {
                let lhs = values(width * width, 1);
                let rhs = values(width * width, 2);
                let l = if lt {
                    View::rows(5, k, m, width).t()
                } else {
                    View::rows(5, m, k, width)
                };
                let r = if rt {
                    View::rows(3, n, k, width).t()
                } else {
                    View::rows(3, k, n, width)
                };
                let d = View::rows(2, m, n, width);
                let mut got = values(width * width, 3);
                let mut want = got.clone();
                matmul(&mut got, d, &lhs, l, &rhs, r, acc);
                reference(&mut want, d, &lhs, l, &rhs, r, acc);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{m}x{n}x{k} {lt} {rt} {acc} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "past the slice")]
    fn refuses_a_view_outside_its_slice() {
        let mut dst = vec![0f32; 4];
        matmul(
            &mut dst,
            View::rows(0, 2, 2, 2),
            &[1.0; 4],
            View::rows(1, 2, 2, 2),
            &[1.0; 4],
            View::rows(0, 2, 2, 2),
            false,
        );
    }
}
