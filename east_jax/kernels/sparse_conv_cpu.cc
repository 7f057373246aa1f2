// Convolution over the kept weights only, on CPU, as XLA FFI handlers
// (east_jax/models/sparse_conv.py calls them; east_jax/kernels/__init__.py builds them).
//
// Activations are CNHW (channel first), kernels HWIO given as the flat indices of their
// kept weights and the values there. A kept weight k at (i, j, ci, co) touches one input
// plane and one output plane of every image:
//
//   forward      y[co, b, h, w]  += v_k * x[ci, b, h*sh + i - pt, w*sw + j - pl]
//   input grad   dx[ci, b, ...]  += v_k * dy[co, b, h, w]
//   values grad  g_k = sum over b, h, w of x[ci, b, ...] * dy[co, b, h, w]
//
// Images are processed in blocks small enough to stay in cache (a parallel loop over the
// blocks), in one of two layouts:
// - In place (stride 1, output as large as the input: every 'same' convolution). Output
//   position q of a block (q = b*H*W + h*W + w, all its images at once) reads input
//   position q + shift_k, shift_k = (i - pt) * W + j - pl, of the input channel's slab
//   where it lies in x: nothing is copied (but the first and last slabs of an array,
//   whose shifted reads would leave it). A shifted read that leaves q's image row or
//   image is masked off (one bit mask per kernel offset, an `and` per vector).
// - Stride phases (strided convolutions). A block's input is first gathered, zero-padded,
//   into stride phases: plane (ci, phase) holds x_padded[ci, b, r*sh + a, c*sw + d] at
//   b*Hq*Wq + r*Wq + c for the phase (a, d). There every tap is a plain 1-D shift: grid
//   position p = b*Hq*Wq + h*Wq + w reads its plane at p + shift_k, shift_k =
//   (i / sh) * Wq + j / sw; results are computed on the grid, then gathered into y (or
//   dx), dropping the grid's padding positions.
// The forward pass sums, per output channel, the taps that write to it in registers over
// segments of kSegment positions, straight into y; the input gradient sums, per input
// plane, the output gradients shifted back; the values gradient is one dot product per
// tap. Only the first `count` slots are real (the rest pad to a static size); taps whose
// value is 0 are left out of y and dx. Sums are float32; the values gradient adds the
// blocks in order, so results do not depend on the thread count.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using Dims = ffi::Span<const int64_t>;

namespace {

constexpr int64_t kVector = 16;             // floats per Vec
constexpr int64_t kSegment = 64;            // positions summed in registers at once
constexpr int64_t kBlockFloats = 1 << 17;   // a block's (phase) input + output (512 KiB)

int64_t CeilDiv(int64_t n, int64_t d) { return (n + d - 1) / d; }

// Index arithmetic of one call: CNHW input / output, HWIO kernel, strides, padding, and
// the layout of an image block: in place (stride 1, output as large as the input) or
// stride phases.
struct Layout {
  int64_t cin, batch, height, width, cout, ho, wo, kh, kw, sh, sw, pt, pl;
  bool in_place;
  int64_t hq, wq, phases, plane;  // (phase) plane rows / columns, sh * sw, hq * wq
  int64_t images, blocks, grid;   // images per block, blocks, block positions (padded)
  int64_t reach;                  // largest |shift| of a tap

  Layout(Dims x, Dims y, int64_t kh_, int64_t kw_, int64_t sh_, int64_t sw_, int64_t pt_,
         int64_t pl_)
      : cin(x[0]), batch(x[1]), height(x[2]), width(x[3]), cout(y[0]), ho(y[2]), wo(y[3]),
        kh(kh_), kw(kw_), sh(sh_), sw(sw_), pt(pt_), pl(pl_) {
    in_place = sh == 1 && sw == 1 && ho == height && wo == width;
    hq = in_place ? height : std::max(CeilDiv(pt + height, sh), (kh - 1) / sh + ho);
    wq = in_place ? width : std::max(CeilDiv(pl + width, sw), (kw - 1) / sw + wo);
    phases = sh * sw;
    plane = hq * wq;
    images = std::clamp<int64_t>(kBlockFloats / ((cin * phases + cout) * plane), 1, batch);
    blocks = CeilDiv(batch, images);
    grid = CeilDiv(images * plane, kSegment) * kSegment;
    reach = in_place ? std::max(pt, kh - 1 - pt) * width + std::max(pl, kw - 1 - pl)
                     : ((kh - 1) / sh) * wq + (kw - 1) / sw;
  }
  // One phase plane of a block, with room for the largest shift and a vector's overrun.
  int64_t stride() const { return grid + reach + kVector; }
};

// A kept weight at (i, j, ci, co). In place, input position q + shift feeds output
// position q (shift = (i - pt) * W + j - pl); in phases, phase plane position p + shift
// feeds grid position p (shift = (i / sh) * Wq + j / sw).
struct Tap {
  int64_t k, plane, co, shift, offset;  // slot, ci * phases + phase, co, shift, i * kw + j
};

std::vector<Tap> DecodeTaps(const int32_t* indices, int64_t count, const Layout& l) {
  std::vector<Tap> taps(count);
  for (int64_t k = 0; k < count; ++k) {
    int64_t rest = indices[k];
    const int64_t i = rest / (l.kw * l.cin * l.cout);
    rest %= l.kw * l.cin * l.cout;
    const int64_t j = rest / (l.cin * l.cout);
    rest %= l.cin * l.cout;
    const int64_t phase = (i % l.sh) * l.sw + j % l.sw;
    const int64_t shift = l.in_place ? (i - l.pt) * l.width + j - l.pl
                                     : (i / l.sh) * l.wq + j / l.sw;
    taps[k] = Tap{k, (rest / l.cout) * l.phases + phase, rest % l.cout, shift, i * l.kw + j};
  }
  return taps;
}

// Taps with a nonzero value, grouped by `key` (begin offsets of `groups` + 1 entries).
template <typename Key>
std::vector<Tap> GroupTaps(const std::vector<Tap>& taps, const float* values, int64_t groups,
                           Key key, std::vector<int64_t>* begin) {
  std::vector<Tap> grouped;
  for (const Tap& t : taps)
    if (values[t.k] != 0.0f) grouped.push_back(t);
  std::stable_sort(grouped.begin(), grouped.end(),
                   [&](const Tap& a, const Tap& b) { return key(a) < key(b); });
  begin->assign(groups + 1, 0);
  for (const Tap& t : grouped) ++(*begin)[key(t) + 1];
  for (int64_t g = 0; g < groups; ++g) (*begin)[g + 1] += (*begin)[g];
  return grouped;
}

// 16 floats (or their bits), loaded and stored unaligned; GCC / Clang lower them to the
// machine's vectors.
typedef float Vec __attribute__((vector_size(64), aligned(4)));
typedef int32_t Bits __attribute__((vector_size(64), aligned(4)));

// out[p - first] = sum over taps t of values[t] * inputs[t][p], for p in [first, first +
// length) (length a multiple of kSegment), kSegment positions at a time in registers;
// with `masks`, only where masks[t][p] is set (a bitwise and: NaN-safe).
template <bool kMasked>
void SumShifted(const float* const* inputs, const int32_t* const* masks, const float* values,
                int64_t taps, int64_t first, int64_t length, float* out) {
  static_assert(kSegment == 4 * kVector, "four vectors per segment");
  for (int64_t p = first; p < first + length; p += kSegment) {
    Vec a[4] = {};
    for (int64_t t = 0; t < taps; ++t) {
      const Vec v = Vec{} + values[t];
      const Vec* in = reinterpret_cast<const Vec*>(inputs[t] + p);
      if constexpr (kMasked) {
        const Bits* m = reinterpret_cast<const Bits*>(masks[t] + p);
        for (int r = 0; r < 4; ++r) a[r] += v * (Vec)((Bits)in[r] & m[r]);
      } else {
        for (int r = 0; r < 4; ++r) a[r] += v * in[r];
      }
    }
    Vec* o = reinterpret_cast<Vec*>(out + p - first);
    for (int r = 0; r < 4; ++r) o[r] = a[r];
  }
}

// sum over p < n of a[p] * b[p] (with `mask`: where mask[p] is set), in four vectors of
// partial sums over whole segments, then the rest.
template <bool kMasked>
float Dot(const float* a, const float* b, const int32_t* mask, int64_t n) {
  Vec acc[4] = {};
  const int64_t whole = n / kSegment * kSegment;
  for (int64_t p = 0; p < whole; p += kSegment) {
    const Vec* x = reinterpret_cast<const Vec*>(a + p);
    const Vec* y = reinterpret_cast<const Vec*>(b + p);
    for (int r = 0; r < 4; ++r) {
      if constexpr (kMasked) {
        const Bits* m = reinterpret_cast<const Bits*>(mask + p);
        acc[r] += (Vec)((Bits)x[r] & m[r]) * y[r];
      } else {
        acc[r] += x[r] * y[r];
      }
    }
  }
  const Vec total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  float sum = 0.0f;
  for (int i = 0; i < kVector; ++i) sum += total[i];
  for (int64_t p = whole; p < n; ++p)
    if (!kMasked || mask[p]) sum += a[p] * b[p];
  return sum;
}

inline void Copy(const float* __restrict__ src, float* __restrict__ dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

inline void Zero(float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = 0.0f;
}

// out[p] for p < n (any n) of an in-place block: whole segments straight into `out`, the
// last part of one through `tail` (kSegment floats).
void SumInto(const float* const* inputs, const int32_t* const* masks, const float* values,
             int64_t taps, int64_t n, float* out, float* tail) {
  const int64_t whole = n / kSegment * kSegment;
  SumShifted<true>(inputs, masks, values, taps, 0, whole, out);
  if (whole == n) return;
  SumShifted<true>(inputs, masks, values, taps, whole, kSegment, tail);
  Copy(tail, out + whole, n - whole);
}

// dst[p] = src[index[p]], or 0 where index[p] < 0, for p < n (vector gathers).
inline void Gather(const float* __restrict__ src, const int32_t* __restrict__ index, int64_t n,
                   float* __restrict__ dst) {
#pragma omp simd
  for (int64_t p = 0; p < n; ++p) {
    const int32_t i = index[p];
    const float v = src[i < 0 ? 0 : i];
    dst[p] = i < 0 ? 0.0f : v;
  }
}

// In place, which positions of a block each kernel offset (i, j) may use: at(i * kw + j)[q],
// for q in [-reach, grid + reach), is all ones where output position q's input
// (q + its shift) lies inside q's own image, else 0 (padding, or another image).
class InPlaceMasks {
 public:
  explicit InPlaceMasks(const Layout& l) : size_(l.grid + 2 * l.reach), origin_(l.reach) {
    if (!l.in_place) return;
    bits_.resize(l.kh * l.kw * size_);
    for (int64_t i = 0; i < l.kh; ++i)
      for (int64_t j = 0; j < l.kw; ++j)
        for (int64_t q = -origin_; q < size_ - origin_; ++q) {
          const int64_t r = (q % l.plane + l.plane) % l.plane;
          const int64_t h = r / l.width + i - l.pt, w = r % l.width + j - l.pl;
          const bool inside = h >= 0 && h < l.height && w >= 0 && w < l.width;
          bits_[(i * l.kw + j) * size_ + origin_ + q] = inside ? -1 : 0;
        }
  }
  const int32_t* at(int64_t offset) const { return bits_.data() + offset * size_ + origin_; }

 private:
  std::vector<int32_t> bits_;
  int64_t size_, origin_;
};

// In place, where a block reads the `n` images of one channel at data[start...]: there,
// when [start - reach, start + grid + reach) lies inside the array's `size` floats, else
// in a zero-padded copy in `copy` (the first and last slabs of an array).
const float* Readable(const float* data, int64_t size, int64_t start, int64_t n,
                      const Layout& l, std::vector<float>* copy) {
  if (start >= l.reach && start + l.grid + l.reach <= size) return data + start;
  copy->assign(l.grid + 2 * l.reach, 0.0f);
  Copy(data + start, copy->data() + l.reach, n * l.plane);
  return copy->data() + l.reach;
}

// Index maps between a block's CNHW slices (one channel's `images` images, from the
// block's first) and its phase layout; computed once per call, the last block (fewer
// images) uses their prefixes.
// Phase plane position (phase by phase) -> input offset, -1 in the padding.
std::vector<int32_t> PhaseSources(const Layout& l) {
  std::vector<int32_t> map;
  map.reserve(l.phases * l.images * l.plane);
  for (int64_t a = 0; a < l.sh; ++a)
    for (int64_t d = 0; d < l.sw; ++d)
      for (int64_t b = 0; b < l.images; ++b)
        for (int64_t r = 0; r < l.hq; ++r)
          for (int64_t c = 0; c < l.wq; ++c) {
            const int64_t h = r * l.sh + a - l.pt, w = c * l.sw + d - l.pl;
            const bool inside = h >= 0 && h < l.height && w >= 0 && w < l.width;
            map.push_back(inside ? (b * l.height + h) * l.width + w : -1);
          }
  return map;
}

// Output position (b, h, w) -> its grid position b * plane + h * wq + w.
std::vector<int32_t> OutputCells(const Layout& l) {
  std::vector<int32_t> map;
  map.reserve(l.images * l.ho * l.wo);
  for (int64_t b = 0; b < l.images; ++b)
    for (int64_t h = 0; h < l.ho; ++h)
      for (int64_t w = 0; w < l.wo; ++w) map.push_back(b * l.plane + h * l.wq + w);
  return map;
}

// Grid position -> output offset, -1 where the grid has no output.
std::vector<int32_t> GridOutputs(const Layout& l) {
  std::vector<int32_t> map;
  map.reserve(l.images * l.plane);
  for (int64_t b = 0; b < l.images; ++b)
    for (int64_t h = 0; h < l.hq; ++h)
      for (int64_t w = 0; w < l.wq; ++w)
        map.push_back(h < l.ho && w < l.wo ? (b * l.ho + h) * l.wo + w : -1);
  return map;
}

// Input position -> its place in the phase planes of its channel, planes `grid` apart.
std::vector<int32_t> InputPhases(const Layout& l) {
  std::vector<int32_t> map;
  map.reserve(l.images * l.height * l.width);
  for (int64_t b = 0; b < l.images; ++b)
    for (int64_t h = l.pt; h < l.pt + l.height; ++h)
      for (int64_t w = l.pl; w < l.pl + l.width; ++w)
        map.push_back(((h % l.sh) * l.sw + w % l.sw) * l.grid + b * l.plane +
                      (h / l.sh) * l.wq + w / l.sw);
  return map;
}

// The zero-padded stride phases of n images of one channel (`x`: the block's first
// image), phase plane by phase plane `stride()` apart, each zero after its n * plane;
// only the `used` ones.
void ToPhases(const float* x, const Layout& l, const int32_t* sources, const char* used,
              int64_t n, float* planes) {
  for (int64_t phase = 0; phase < l.phases; ++phase) {
    if (!used[phase]) continue;
    float* plane = planes + phase * l.stride();
    Gather(x, sources + phase * l.images * l.plane, n * l.plane, plane);
    Zero(plane + n * l.plane, l.stride() - n * l.plane);
  }
}

// The values of `taps`, in their order.
std::vector<float> Values(const std::vector<Tap>& taps, const float* values) {
  std::vector<float> out;
  for (const Tap& t : taps) out.push_back(values[t.k]);
  return out;
}

// Whether any of a channel's `phases` flags is set.
bool AnyPhase(const char* flags, int64_t phases) {
  return std::any_of(flags, flags + phases, [](char f) { return f != 0; });
}

// Which input planes (ci * phases + phase) and output channels (co) some tap uses.
void UsedPlanes(const std::vector<Tap>& taps, const Layout& l, std::vector<char>* in,
                std::vector<char>* out) {
  in->assign(l.cin * l.phases, 0);
  out->assign(l.cout, 0);
  for (const Tap& t : taps) {
    (*in)[t.plane] = 1;
    (*out)[t.co] = 1;
  }
}

// Where a block reads each channel of a CNHW array `data` of `channels` channels that
// has a `used` plane (channel * phases + phase): in place, the channel's slab or a padded
// copy of it (scratch in `copies`); in phases, its phase planes, copied into `planes`.
std::vector<const float*> BlockInputs(const float* data, int64_t channels,
                                      const std::vector<char>& used, const Layout& l,
                                      const int32_t* sources, int64_t b0, int64_t n,
                                      std::vector<std::vector<float>>* copies,
                                      std::vector<float>* planes) {
  std::vector<const float*> out(channels, nullptr);
  const int64_t image = l.height * l.width, slab_size = l.batch * image;
  if (!l.in_place) planes->resize(channels * l.phases * l.stride());
  size_t copy = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const char* used_phases = used.data() + c * l.phases;
    if (!AnyPhase(used_phases, l.phases)) continue;
    const int64_t start = c * slab_size + b0 * image;
    if (!l.in_place) {
      float* p = planes->data() + c * l.phases * l.stride();
      ToPhases(data + start, l, sources, used_phases, n, p);
      out[c] = p;
      continue;
    }
    if (copy == copies->size()) copies->emplace_back();
    out[c] = Readable(data, channels * slab_size, start, n, l, &(*copies)[copy]);
    if (out[c] != data + start) ++copy;
  }
  return out;
}

// Runs body(0..n-1) on the calling thread and XLA's intra-op pool. Helpers claim items
// from a shared counter, so a helper that starts late (or never) costs nothing and the
// call cannot wait on a thread that is busy elsewhere.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Body& body) {
  struct Progress {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto progress = std::make_shared<Progress>();
  auto work = [progress, n, &body] {
    for (int64_t item; (item = progress->next.fetch_add(1)) < n;) {
      body(item);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([work] { work(); });
  work();
  while (progress->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

ffi::Error CheckShapes(Dims x, Dims y, int64_t values, int64_t indices) {
  if (x.size() != 4 || y.size() != 4 || x[1] != y[1])
    return ffi::Error::InvalidArgument("sparse conv: x and y must be CNHW with one batch");
  if (values != indices)
    return ffi::Error::InvalidArgument("sparse conv: one value per kept index");
  return ffi::Error::Success();
}

int64_t UsedSlots(ffi::BufferR0<ffi::S32> count, int64_t slots) {
  return std::clamp<int64_t>(count.typed_data()[0], 0, slots);
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                   ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> indices,
                   ffi::BufferR0<ffi::S32> count, ffi::ResultBuffer<ffi::F32> y, int64_t kh,
                   int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  ffi::Error shapes = CheckShapes(x.dimensions(), y->dimensions(), values.element_count(),
                                  indices.element_count());
  if (shapes.failure()) return shapes;
  const Layout l(x.dimensions(), y->dimensions(), kh, kw, sh, sw, pt, pl);
  const float* v = values.typed_data();
  std::vector<int64_t> begin;
  const std::vector<Tap> taps = GroupTaps(
      DecodeTaps(indices.typed_data(), UsedSlots(count, indices.element_count()), l), v,
      l.cout, [](const Tap& t) { return t.co; }, &begin);
  std::vector<char> in_used, out_used;
  UsedPlanes(taps, l, &in_used, &out_used);
  const std::vector<float> tap_values = Values(taps, v);
  float* ys = y->typed_data();
  const int64_t out_plane = l.ho * l.wo;
  const std::vector<int32_t> sources = l.in_place ? std::vector<int32_t>() : PhaseSources(l);
  const std::vector<int32_t> cells = l.in_place ? std::vector<int32_t>() : OutputCells(l);
  const InPlaceMasks masks(l);

  ParallelFor(pool, l.blocks, [&](int64_t block) {
    const int64_t b0 = block * l.images, n = std::min(l.images, l.batch - b0);
    thread_local std::vector<std::vector<float>> copies;
    thread_local std::vector<float> planes, out;
    thread_local std::vector<const float*> inputs;
    thread_local std::vector<const int32_t*> tap_masks;
    const std::vector<const float*> in = BlockInputs(
        x.typed_data(), l.cin, in_used, l, sources.data(), b0, n, &copies, &planes);
    inputs.resize(taps.size());
    tap_masks.resize(taps.size());
    out.resize(l.grid);
    for (int64_t co = 0; co < l.cout; ++co) {
      float* y_co = ys + (co * l.batch + b0) * out_plane;
      if (!out_used[co]) {
        Zero(y_co, n * out_plane);
        continue;
      }
      for (int64_t t = begin[co]; t < begin[co + 1]; ++t) {
        inputs[t] = in[taps[t].plane / l.phases] + (taps[t].plane % l.phases) * l.stride() +
                    taps[t].shift;
        if (l.in_place) tap_masks[t] = masks.at(taps[t].offset);
      }
      const int64_t b = begin[co], m = begin[co + 1] - begin[co];
      if (l.in_place) {
        SumInto(inputs.data() + b, tap_masks.data() + b, tap_values.data() + b, m,
                n * out_plane, y_co, out.data());
        continue;
      }
      SumShifted<false>(inputs.data() + b, nullptr, tap_values.data() + b, m, 0,
                        CeilDiv(n * l.plane, kSegment) * kSegment, out.data());
      Gather(out.data(), cells.data(), n * out_plane, y_co);
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                    ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> indices,
                    ffi::BufferR0<ffi::S32> count, ffi::Buffer<ffi::F32> dy,
                    ffi::AnyBuffer /*after*/, ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dvalues,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  ffi::Error shapes = CheckShapes(x.dimensions(), dy.dimensions(), values.element_count(),
                                  indices.element_count());
  if (shapes.failure()) return shapes;
  const Layout l(x.dimensions(), dy.dimensions(), kh, kw, sh, sw, pt, pl);
  const int64_t slots = indices.element_count();
  const int64_t used = UsedSlots(count, slots);
  const float* v = values.typed_data();
  const std::vector<Tap> taps = DecodeTaps(indices.typed_data(), used, l);
  std::vector<int64_t> begin;
  const std::vector<Tap> by_plane = GroupTaps(
      taps, v, l.cin * l.phases, [](const Tap& t) { return t.plane; }, &begin);
  std::vector<char> in_used, out_used, in_grad_used, unused;
  UsedPlanes(taps, l, &in_used, &out_used);
  UsedPlanes(by_plane, l, &in_grad_used, &unused);
  const std::vector<float> tap_values = Values(by_plane, v);
  const float* dys = dy.typed_data();
  float* dxs = dx->typed_data();
  // In phases, output gradients sit after `reach` zeros, so that shifting back stays in
  // the buffer.
  const int64_t dy_stride = l.reach + l.grid;
  const int64_t in_plane = l.height * l.width, out_plane = l.ho * l.wo;
  const std::vector<int32_t> sources = l.in_place ? std::vector<int32_t>() : PhaseSources(l);
  const std::vector<int32_t> outputs = l.in_place ? std::vector<int32_t>() : GridOutputs(l);
  const std::vector<int32_t> phases = l.in_place ? std::vector<int32_t>() : InputPhases(l);
  const InPlaceMasks masks(l);
  std::vector<float> per_block(l.blocks * used);

  ParallelFor(pool, l.blocks, [&](int64_t block) {
    const int64_t b0 = block * l.images, n = std::min(l.images, l.batch - b0);
    const int64_t length = CeilDiv(n * l.plane, kSegment) * kSegment;
    thread_local std::vector<std::vector<float>> copies;
    thread_local std::vector<float> planes, dyq, dxq;
    thread_local std::vector<const float*> inputs;
    thread_local std::vector<const int32_t*> tap_masks;
    const std::vector<const float*> in = BlockInputs(
        x.typed_data(), l.cin, in_used, l, sources.data(), b0, n, &copies, &planes);
    // The output gradient of each used channel: in place, where it is (or a padded copy);
    // in phases, on the grid.
    std::vector<const float*> grads(l.cout, nullptr);
    if (l.in_place) {
      thread_local std::vector<std::vector<float>> grad_copies;
      grads = BlockInputs(dys, l.cout, out_used, l, nullptr, b0, n, &grad_copies, nullptr);
    } else {
      dyq.resize(l.cout * dy_stride);
      for (int64_t co = 0; co < l.cout; ++co) {
        if (!out_used[co]) continue;
        float* grad = dyq.data() + co * dy_stride;
        Zero(grad, l.reach);
        Gather(dys + (co * l.batch + b0) * out_plane, outputs.data(), n * l.plane,
               grad + l.reach);
        Zero(grad + l.reach + n * l.plane, l.grid - n * l.plane);
        grads[co] = grad + l.reach;
      }
    }
    // Values gradient: one dot product per tap over the block's (grid) positions.
    const int64_t positions = l.in_place ? n * out_plane : length;
    for (const Tap& t : taps) {
      const float* input = in[t.plane / l.phases] + (t.plane % l.phases) * l.stride() + t.shift;
      per_block[block * used + t.k] =
          l.in_place ? Dot<true>(input, grads[t.co], masks.at(t.offset), positions)
                     : Dot<false>(input, grads[t.co], nullptr, positions);
    }
    // Input gradient: per input channel, its taps' output gradients shifted back.
    inputs.resize(by_plane.size());
    tap_masks.resize(by_plane.size());
    dxq.resize(l.phases * l.grid);
    for (int64_t ci = 0; ci < l.cin; ++ci) {
      float* dx_ci = dxs + (ci * l.batch + b0) * in_plane;
      const char* grad_phases = in_grad_used.data() + ci * l.phases;
      if (!AnyPhase(grad_phases, l.phases)) {
        Zero(dx_ci, n * in_plane);
        continue;
      }
      for (int64_t phase = 0; phase < l.phases; ++phase) {
        const int64_t p = ci * l.phases + phase;
        for (int64_t t = begin[p]; t < begin[p + 1]; ++t) {
          inputs[t] = grads[by_plane[t].co] - by_plane[t].shift;
          if (l.in_place) tap_masks[t] = masks.at(by_plane[t].offset) - by_plane[t].shift;
        }
        const int64_t b = begin[p], m = begin[p + 1] - begin[p];
        if (l.in_place) {
          SumInto(inputs.data() + b, tap_masks.data() + b, tap_values.data() + b, m,
                  n * in_plane, dx_ci, dxq.data());
        } else {
          SumShifted<false>(inputs.data() + b, nullptr, tap_values.data() + b, m, 0, length,
                            dxq.data() + phase * l.grid);
        }
      }
      if (!l.in_place) Gather(dxq.data(), phases.data(), n * in_plane, dx_ci);
    }
  });

  float* gv = dvalues->typed_data();
  std::fill(gv, gv + slots, 0.0f);
  for (int64_t block = 0; block < l.blocks; ++block)
    for (int64_t k = 0; k < used; ++k) gv[k] += per_block[block * used + k];
  return ffi::Error::Success();
}

}  // namespace

namespace {

// What both handlers take: the thread pool, x, values, indices, count ...
template <typename Binding>
auto WithInputs(Binding binding) {
  return std::move(binding).template Ctx<ffi::ThreadPool>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::S32>>()
      .template Arg<ffi::BufferR0<ffi::S32>>();
}

// ... and, after their own arguments and results, the geometry.
template <typename Binding>
auto WithGeometry(Binding binding) {
  return std::move(binding).template Attr<int64_t>("kh")
      .template Attr<int64_t>("kw")
      .template Attr<int64_t>("sh")
      .template Attr<int64_t>("sw")
      .template Attr<int64_t>("pt")
      .template Attr<int64_t>("pl");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EastSparseConvForward, Forward,
                              WithGeometry(WithInputs(ffi::Ffi::Bind())
                                               .Ret<ffi::Buffer<ffi::F32>>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EastSparseConvBackward, Backward,
                              WithGeometry(WithInputs(ffi::Ffi::Bind())
                                               .Arg<ffi::Buffer<ffi::F32>>()
                                               .Arg<ffi::AnyBuffer>()
                                               .Ret<ffi::Buffer<ffi::F32>>()
                                               .Ret<ffi::Buffer<ffi::F32>>()));
