//! PNG row filters (PNG specification, section 9) and the adaptive choice between them.
//!
//! Each row of a PNG is stored after a filter that replaces every byte by its difference from
//! a prediction made from its neighbours: the byte one pixel to the left (`a`), the byte above
//! (`b`) and the byte above-left (`c`). Bytes left of the row's start and the row above the
//! image count as zero. Filtering works on the bytes as they are stored in the file (16-bit
//! samples big-endian), with the distance `bpp` (bytes per pixel) between a byte and its left
//! neighbour.
//!
//! [`RowFilters::filter`] tries Up, Sub, Average and Paeth and keeps the row whose bytes, read
//! as signed, have the smallest sum of absolute values (the "minimum sum of absolute
//! differences" heuristic of the PNG specification). It makes the same choice as the `png`
//! crate's `Filter::Adaptive`, ties going to the filter tried last and a row of zeros ending
//! the search, so files match that encoder's in size.

/// The filter types as the file names them (the byte before each row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum FilterType {
    /// No prediction: the byte itself. Used for rows stored uncompressed.
    None = 0,
    Sub = 1,
    Up = 2,
    Average = 3,
    Paeth = 4,
}

/// The filters tried for each row, in the order the `png` crate tries them.
const CANDIDATES: [FilterType; 4] = [
    FilterType::Up,
    FilterType::Sub,
    FilterType::Average,
    FilterType::Paeth,
];

/// Scratch space for filtering rows of one length: one output row per candidate filter, each
/// led by its filter-type byte, so the winner never has to be computed twice.
pub(super) struct RowFilters {
    bpp: usize,
    outputs: [Vec<u8>; 4],
}

impl RowFilters {
    /// Scratch space for rows of `row_len` bytes with `bpp` bytes per pixel (1 to 8).
    pub(super) fn new(row_len: usize, bpp: usize) -> RowFilters {
        RowFilters {
            bpp,
            outputs: std::array::from_fn(|index| {
                let mut output = vec![0; row_len + 1];
                output[0] = CANDIDATES[index] as u8;
                output
            }),
        }
    }

    /// Filters `current` (whose row above is `previous`, zeros for the first row) with the
    /// adaptive choice and returns the row as the file stores it: the filter-type byte, then
    /// the filtered bytes.
    ///
    /// `previous` and `current` must both be as long as the rows this was made for.
    pub(super) fn filter(&mut self, previous: &[u8], current: &[u8]) -> &[u8] {
        let mut best = 0;
        let mut best_cost = u64::MAX;
        for (index, (&filter, output)) in CANDIDATES.iter().zip(&mut self.outputs).enumerate() {
            let filtered = &mut output[1..];
            apply(filter, self.bpp, previous, current, filtered);
            let cost = signed_magnitude_sum(filtered);
            if cost <= best_cost {
                best = index;
                best_cost = cost;
                if cost == 0 {
                    break;
                }
            }
        }
        &self.outputs[best]
    }
}

/// Bytes handled per step of the filter loops: fixed-size steps let the compiler vectorise
/// them (32 measured best in the `png` crate, whose loops these follow).
const STEP: usize = 32;

/// Writes `current` filtered with `filter` to `output` (all three of one length, `previous`
/// the row above).
fn apply(filter: FilterType, bpp: usize, previous: &[u8], current: &[u8], output: &mut [u8]) {
    let len = current.len();
    let bpp = bpp.min(len);
    match filter {
        FilterType::None => output.copy_from_slice(current),
        FilterType::Sub => {
            let (head, tail) = output.split_at_mut(bpp);
            head.copy_from_slice(&current[..bpp]);
            map_two(tail, &current[bpp..], &current[..len - bpp], |x, a| {
                x.wrapping_sub(a)
            });
        }
        FilterType::Up => map_two(output, current, previous, |x, b| x.wrapping_sub(b)),
        FilterType::Average => {
            let (head, tail) = output.split_at_mut(bpp);
            for ((out, &x), &b) in head.iter_mut().zip(current).zip(previous) {
                *out = x.wrapping_sub(b >> 1);
            }
            let mut out_steps = tail.chunks_exact_mut(STEP);
            let mut x_steps = current[bpp..].chunks_exact(STEP);
            let mut a_steps = current[..len - bpp].chunks_exact(STEP);
            let mut b_steps = previous[bpp..].chunks_exact(STEP);
            for (((out, x), a), b) in (&mut out_steps)
                .zip(&mut x_steps)
                .zip(&mut a_steps)
                .zip(&mut b_steps)
            {
                for i in 0..STEP {
                    out[i] = x[i].wrapping_sub(floor_mean(a[i], b[i]));
                }
            }
            for (((out, &x), &a), &b) in out_steps
                .into_remainder()
                .iter_mut()
                .zip(x_steps.remainder())
                .zip(a_steps.remainder())
                .zip(b_steps.remainder())
            {
                *out = x.wrapping_sub(floor_mean(a, b));
            }
        }
        FilterType::Paeth => {
            let (head, tail) = output.split_at_mut(bpp);
            // With a and c zero, the Paeth predictor is b.
            for ((out, &x), &b) in head.iter_mut().zip(current).zip(previous) {
                *out = x.wrapping_sub(b);
            }
            let mut out_steps = tail.chunks_exact_mut(STEP);
            let mut x_steps = current[bpp..].chunks_exact(STEP);
            let mut a_steps = current[..len - bpp].chunks_exact(STEP);
            let mut b_steps = previous[bpp..].chunks_exact(STEP);
            let mut c_steps = previous[..len - bpp].chunks_exact(STEP);
            for ((((out, x), a), b), c) in (&mut out_steps)
                .zip(&mut x_steps)
                .zip(&mut a_steps)
                .zip(&mut b_steps)
                .zip(&mut c_steps)
            {
                for i in 0..STEP {
                    out[i] = x[i].wrapping_sub(paeth_predictor(a[i], b[i], c[i]));
                }
            }
            for ((((out, &x), &a), &b), &c) in out_steps
                .into_remainder()
                .iter_mut()
                .zip(x_steps.remainder())
                .zip(a_steps.remainder())
                .zip(b_steps.remainder())
                .zip(c_steps.remainder())
            {
                *out = x.wrapping_sub(paeth_predictor(a, b, c));
            }
        }
    }
}

/// `output[i] = f(x[i], y[i])`, in fixed-size steps.
fn map_two(output: &mut [u8], x: &[u8], y: &[u8], f: impl Fn(u8, u8) -> u8) {
    let mut out_steps = output.chunks_exact_mut(STEP);
    let mut x_steps = x.chunks_exact(STEP);
    let mut y_steps = y.chunks_exact(STEP);
    for ((out, x), y) in (&mut out_steps).zip(&mut x_steps).zip(&mut y_steps) {
        for i in 0..STEP {
            out[i] = f(x[i], y[i]);
        }
    }
    for ((out, &x), &y) in out_steps
        .into_remainder()
        .iter_mut()
        .zip(x_steps.remainder())
        .zip(y_steps.remainder())
    {
        *out = f(x, y);
    }
}

/// The mean of `a` and `b`, rounded down, without widening.
fn floor_mean(a: u8, b: u8) -> u8 {
    (a & b) + ((a ^ b) >> 1)
}

/// The Paeth predictor: whichever of `a` (left), `b` (above) and `c` (above-left) is closest to
/// `a + b - c`, ties preferring `a`, then `b`.
///
/// Computed on bytes only, in the branch-free form of fpnge that compilers vectorise:
/// `|p - a| = |b - c|` and `|p - b| = |a - c|`; and when `c` lies between `a` and `b`,
/// `|p - c| = ||b - c| - |a - c||`, while otherwise it exceeds both and never wins.
fn paeth_predictor(a: u8, b: u8, c: u8) -> u8 {
    let distance_a = b.max(c) - b.min(c);
    let distance_b = a.max(c) - a.min(c);
    let distance_c = if (a < c) == (c < b) {
        distance_a.max(distance_b) - distance_a.min(distance_b)
    } else {
        u8::MAX
    };
    if distance_a <= distance_b && distance_a <= distance_c {
        a
    } else if distance_b <= distance_c {
        b
    } else {
        c
    }
}

/// The sum of the bytes of `row` read as signed values, in absolute value: small when the
/// filter predicted well.
fn signed_magnitude_sum(row: &[u8]) -> u64 {
    let mut steps = row.chunks_exact(STEP);
    let mut sum = 0u64;
    for step in &mut steps {
        // At most 32 * 128: no overflow in u32.
        let mut step_sum = 0u32;
        for &byte in step {
            step_sum += u32::from((byte as i8).unsigned_abs());
        }
        sum += u64::from(step_sum);
    }
    let rest: u32 = steps
        .remainder()
        .iter()
        .map(|&byte| u32::from((byte as i8).unsigned_abs()))
        .sum();
    sum + u64::from(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Paeth predictor exactly as the PNG specification writes it.
    fn reference_paeth(a: u8, b: u8, c: u8) -> u8 {
        let p = i16::from(a) + i16::from(b) - i16::from(c);
        let (pa, pb, pc) = (
            (p - i16::from(a)).abs(),
            (p - i16::from(b)).abs(),
            (p - i16::from(c)).abs(),
        );
        if pa <= pb && pa <= pc {
            a
        } else if pb <= pc {
            b
        } else {
            c
        }
    }

    /// Undoes `filter` on `filtered`, as a decoder does, to check that filtering is reversible.
    fn unfilter(filter: FilterType, bpp: usize, previous: &[u8], filtered: &[u8]) -> Vec<u8> {
        let mut row = vec![0u8; filtered.len()];
        for i in 0..filtered.len() {
            let a = if i >= bpp { row[i - bpp] } else { 0 };
            let b = previous[i];
            let c = if i >= bpp { previous[i - bpp] } else { 0 };
            let prediction = match filter {
                FilterType::None => 0,
                FilterType::Sub => a,
                FilterType::Up => b,
                FilterType::Average => ((u16::from(a) + u16::from(b)) / 2) as u8,
                FilterType::Paeth => reference_paeth(a, b, c),
            };
            row[i] = filtered[i].wrapping_add(prediction);
        }
        row
    }

    #[test]
    fn paeth_predictor_matches_the_specification_for_every_input() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in (0..=255u8).step_by(3) {
                    assert_eq!(paeth_predictor(a, b, c), reference_paeth(a, b, c));
                }
            }
        }
    }

    #[test]
    fn every_filter_is_undone_by_the_decoder_rule() {
        for bpp in 1..=8 {
            for len in [bpp, bpp + 1, 3 * bpp, 37, 100] {
                let previous: Vec<u8> = (0..len).map(|i| (i * 91 % 256) as u8).collect();
                let current: Vec<u8> = (0..len).map(|i| (i * 173 % 251) as u8).collect();
                let mut output = vec![0; len];
                for filter in [FilterType::None]
                    .into_iter()
                    .chain(CANDIDATES.iter().copied())
                {
                    apply(filter, bpp, &previous, &current, &mut output);
                    assert_eq!(
                        unfilter(filter, bpp, &previous, &output),
                        current,
                        "{filter:?}, bpp {bpp}, len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn adaptive_choice_prefers_the_cheapest_row_and_the_later_filter_on_ties() {
        let mut filters = RowFilters::new(8, 1);
        // A row equal to the one above: Up gives zeros and ends the search.
        let row = [5, 9, 2, 7, 7, 1, 0, 3];
        assert_eq!(
            filters.filter(&row, &row),
            &[FilterType::Up as u8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // A ramp under a flat row of 9s: Sub gives 0 and then 1s; Paeth predicts the first
        // byte from above (9) and loses.
        let ramp = [0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(filters.filter(&[9; 8], &ramp), &[1, 0, 1, 1, 1, 1, 1, 1, 1]);
        // A flat row under zeros: Sub and Paeth tie (both leave only the first byte); the
        // later one, Paeth, wins, as in the png crate.
        let stored = filters.filter(&[0; 8], &[4; 8]);
        assert_eq!(stored, &[FilterType::Paeth as u8, 4, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn signed_magnitude_sum_reads_bytes_as_signed() {
        assert_eq!(
            signed_magnitude_sum(&[0, 1, 255, 128, 127]),
            1 + 1 + 128 + 127
        );
        assert_eq!(signed_magnitude_sum(&vec![255; 200_000]), 200_000);
    }
}
