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
// blocks). A block's input is first copied, zero-padded, into stride phases: plane
// (ci, phase) holds x_padded[ci, b, r*sh + a, c*sw + d] at b*Hq*Wq + r*Wq + c for the
// phase (a, d). In that layout every tap is a plain 1-D shift: output position
// p = b*Hq*Wq + h*Wq + w reads its plane at p + off_k, off_k = (i / sh) * Wq + j / sw, for
// all images of the block at once. The forward pass sums, per output channel, the taps
// that write to it in registers, one output row at a time straight into y (rows of 16+
// columns) or over segments of kSegment grid positions then cropped (narrow rows, where
// positions with h >= ho or w >= wo are computed and dropped); the input gradient sums
// segments per input plane with the output gradient shifted back; the values gradient is
// one dot product per tap. Only the first `count` slots are real (the rest pad to a static size);
// taps whose value is 0 are left out of y and dx. Sums are float32; the values gradient
// adds the blocks in order, so results do not depend on the thread count.

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
constexpr int64_t kRowVectors = 8;          // most vectors of an output row summed at once
constexpr int64_t kBlockFloats = 1 << 17;   // a block's padded input + output (512 KiB)

int64_t CeilDiv(int64_t n, int64_t d) { return (n + d - 1) / d; }

// Index arithmetic of one call: CNHW input / output, HWIO kernel, strides, padding, and
// the phase layout of an image block.
struct Layout {
  int64_t cin, batch, height, width, cout, ho, wo, kh, kw, sh, sw, pt, pl;
  int64_t hq, wq, phases, plane;  // phase plane rows / columns, sh * sw, hq * wq
  int64_t images, blocks, grid;   // images per block, blocks, block positions (padded)
  int64_t slack;                  // largest tap shift

  Layout(Dims x, Dims y, int64_t kh_, int64_t kw_, int64_t sh_, int64_t sw_, int64_t pt_,
         int64_t pl_)
      : cin(x[0]), batch(x[1]), height(x[2]), width(x[3]), cout(y[0]), ho(y[2]), wo(y[3]),
        kh(kh_), kw(kw_), sh(sh_), sw(sw_), pt(pt_), pl(pl_) {
    hq = std::max(CeilDiv(pt + height, sh), (kh - 1) / sh + ho);
    wq = std::max(CeilDiv(pl + width, sw), (kw - 1) / sw + wo);
    phases = sh * sw;
    plane = hq * wq;
    images = std::clamp<int64_t>(kBlockFloats / ((cin * phases + cout) * plane), 1, batch);
    blocks = CeilDiv(batch, images);
    grid = CeilDiv(images * plane, kSegment) * kSegment;
    slack = ((kh - 1) / sh) * wq + (kw - 1) / sw;
  }
  // One phase plane of a block, with slack for the largest shift and a vector's overrun.
  int64_t stride() const { return grid + slack + kVector; }
};

struct Tap {
  int64_t k, plane, co, shift;  // slot, input phase plane (ci * phases + phase), shift
  int64_t ci, di, dj;           // input channel, row / column offset (i - pt, j - pl)
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
    taps[k] = Tap{k, (rest / l.cout) * l.phases + phase, rest % l.cout,
                  (i / l.sh) * l.wq + j / l.sw, rest / l.cout, i - l.pt, j - l.pl};
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

// 16 floats, loaded and stored unaligned; GCC / Clang lower it to the machine's vectors.
typedef float Vec __attribute__((vector_size(64), aligned(4)));

// out[p] = sum over taps t of values[t] * inputs[t][p], for p < length (a multiple of
// kSegment), kSegment positions at a time in registers.
void SumShifted(const float* const* inputs, const float* values, int64_t taps, int64_t length,
                float* out) {
  static_assert(kSegment == 4 * 16, "four vectors per segment");
  for (int64_t p = 0; p < length; p += kSegment) {
    Vec a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t t = 0; t < taps; ++t) {
      const Vec v = Vec{} + values[t];
      const Vec* in = reinterpret_cast<const Vec*>(inputs[t] + p);
      a0 += v * in[0];
      a1 += v * in[1];
      a2 += v * in[2];
      a3 += v * in[3];
    }
    Vec* o = reinterpret_cast<Vec*>(out + p);
    o[0] = a0;
    o[1] = a1;
    o[2] = a2;
    o[3] = a3;
  }
}

// out[w] = sum over taps t of values[t] * inputs[t][w], w < width <= NV * kVector: one
// output row summed in NV vectors of registers and written straight to the output (the
// inputs may be read up to a vector past `width`).
template <int NV>
void SumRow(const float* const* inputs, const float* values, int64_t taps, int64_t offset,
            int64_t width, float* out) {
  Vec acc[NV] = {};
  for (int64_t t = 0; t < taps; ++t) {
    const Vec v = Vec{} + values[t];
    const Vec* in = reinterpret_cast<const Vec*>(inputs[t] + offset);
    for (int k = 0; k < NV; ++k) acc[k] += v * in[k];
  }
  const float* sums = reinterpret_cast<const float*>(acc);
  for (int64_t w = 0; w < width; ++w) out[w] = sums[w];
}

// Columns [0, width) of one output row, kRowVectors vectors at a time.
void SumRows(const float* const* inputs, const float* values, int64_t taps, int64_t offset,
             int64_t width, float* out) {
  using Fn = void (*)(const float* const*, const float*, int64_t, int64_t, int64_t, float*);
  static constexpr Fn kByVectors[kRowVectors] = {SumRow<1>, SumRow<2>, SumRow<3>, SumRow<4>,
                                                 SumRow<5>, SumRow<6>, SumRow<7>, SumRow<8>};
  for (int64_t c = 0; c < width; c += kRowVectors * kVector) {
    const int64_t n = std::min(kRowVectors * kVector, width - c);
    kByVectors[CeilDiv(n, kVector) - 1](inputs, values, taps, offset + c, n, out + c);
  }
}

// Stride 1, rows of kVector+ columns: output channel `co`'s rows of image b, its taps
// reading the input rows in place (no phase copy). Each row sums its taps' shifted input
// rows in registers; the columns whose window crosses the left or right border (and the
// rows whose vector reads would leave the input buffer) are then computed exactly, tap by
// tap. `ptrs`, `vals`, `used`: scratch of at least `count` entries.
void RowsInPlace(const Layout& l, const Tap* taps, const float* values, int64_t count,
                 const float* xs, int64_t b, float* y, const float** ptrs, float* vals,
                 const Tap** used) {
  const float* x_end = xs + l.cin * l.batch * l.height * l.width;
  const int64_t reach = CeilDiv(l.wo, kVector) * kVector;  // floats SumRows reads per row
  const int64_t left = std::min(l.pl, l.wo);
  const int64_t right = std::max(left, l.width - (l.kw - 1 - l.pl));
  for (int64_t h = 0; h < l.ho; ++h) {
    int64_t m = 0;
    bool inside = true;
    for (int64_t t = 0; t < count; ++t) {
      const int64_t r = h + taps[t].di;
      if (r < 0 || r >= l.height) continue;
      const float* p = xs + ((taps[t].ci * l.batch + b) * l.height + r) * l.width + taps[t].dj;
      inside = inside && p >= xs && p + reach <= x_end;
      ptrs[m] = p;
      vals[m] = values[t];
      used[m++] = taps + t;
    }
    float* out = y + h * l.wo;
    auto exact = [&](int64_t w) {
      float sum = 0.0f;
      for (int64_t k = 0; k < m; ++k) {
        const int64_t c = w + used[k]->dj;
        if (c >= 0 && c < l.width) sum += vals[k] * ptrs[k][w];
      }
      out[w] = sum;
    };
    if (!inside) {
      for (int64_t w = 0; w < l.wo; ++w) exact(w);
      continue;
    }
    SumRows(ptrs, vals, m, 0, l.wo, out);
    for (int64_t w = 0; w < left; ++w) exact(w);
    for (int64_t w = right; w < l.wo; ++w) exact(w);
  }
}

// Columns [lo, hi) of a phase row whose input column c * s + d - pad lies in [0, size).
void PhaseRange(int64_t d, int64_t s, int64_t pad, int64_t size, int64_t cols, int64_t* lo,
                int64_t* hi) {
  *lo = std::min(cols, pad - d > 0 ? CeilDiv(pad - d, s) : 0);
  const int64_t last = size - 1 + pad - d;  // c * s <= last
  *hi = std::max(*lo, last < 0 ? 0 : std::min(cols, last / s + 1));
}

// Short row copies and fills, inlined (a library call per 32-float row costs more).
inline void Copy(const float* __restrict__ src, float* __restrict__ dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

inline void Zero(float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = 0.0f;
}

// Copies between images [b0, b0 + n) of channel ci of a CNHW array and its phase planes
// (plane ci * phases + phase at planes + (ci * phases + phase) * stride + b * plane).
// to_phases: planes = x, 0 where outside the input (each position written once);
// else x = planes.
void CopyPhases(bool to_phases, float* x, const Layout& l, int64_t ci, int64_t b0, int64_t n,
                float* planes, int64_t stride) {
  for (int64_t a = 0; a < l.sh; ++a)
    for (int64_t d = 0; d < l.sw; ++d) {
      float* plane = planes + (ci * l.phases + a * l.sw + d) * stride;
      int64_t r0, r1, c0, c1;
      PhaseRange(a, l.sh, l.pt, l.height, l.hq, &r0, &r1);
      PhaseRange(d, l.sw, l.pl, l.width, l.wq, &c0, &c1);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t r = 0; r < l.hq; ++r) {
          float* row = plane + b * l.plane + r * l.wq;
          if (r < r0 || r >= r1) {
            if (to_phases) Zero(row, l.wq);
            continue;
          }
          float* src = x + ((ci * l.batch + b0 + b) * l.height + r * l.sh + a - l.pt) * l.width +
                       d - l.pl;
          if (l.sw == 1) {
            if (to_phases) Copy(src + c0, row + c0, c1 - c0);
            else Copy(row + c0, src + c0, c1 - c0);
          } else if (to_phases) {
            for (int64_t c = c0; c < c1; ++c) row[c] = src[c * l.sw];
          } else {
            for (int64_t c = c0; c < c1; ++c) src[c * l.sw] = row[c];
          }
          if (to_phases) {
            Zero(row, c0);
            Zero(row + c1, l.wq - c1);
          }
        }
      if (to_phases) Zero(plane + n * l.plane, stride - n * l.plane);
    }
}

// The values of `taps`, in their order.
std::vector<float> Values(const std::vector<Tap>& taps, const float* values) {
  std::vector<float> out;
  for (const Tap& t : taps) out.push_back(values[t.k]);
  return out;
}

// Which input channels (ci) and output channels (co) some tap uses.
void UsedChannels(const std::vector<Tap>& taps, const Layout& l, std::vector<char>* in,
                  std::vector<char>* out) {
  in->assign(l.cin, 0);
  out->assign(l.cout, 0);
  for (const Tap& t : taps) {
    (*in)[t.plane / l.phases] = 1;
    (*out)[t.co] = 1;
  }
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
  UsedChannels(taps, l, &in_used, &out_used);
  const std::vector<float> tap_values = Values(taps, v);
  float* xs = const_cast<float*>(x.typed_data());  // only read (CopyPhases to phases)
  float* ys = y->typed_data();
  const int64_t out_plane = l.ho * l.wo;

  const bool in_place = l.sh == 1 && l.sw == 1 && l.wo >= kVector;

  ParallelFor(pool, l.blocks, [&](int64_t block) {
    const int64_t b0 = block * l.images, n = std::min(l.images, l.batch - b0);
    thread_local std::vector<float> xq, out, vals;
    thread_local std::vector<const float*> inputs;
    thread_local std::vector<const Tap*> used;
    inputs.resize(taps.size());
    if (in_place) {
      vals.resize(taps.size());
      used.resize(taps.size());
    } else {
      xq.resize(l.cin * l.phases * l.stride());
      out.resize(l.grid);
      for (int64_t ci = 0; ci < l.cin; ++ci)
        if (in_used[ci]) CopyPhases(true, xs, l, ci, b0, n, xq.data(), l.stride());
    }
    for (int64_t co = 0; co < l.cout; ++co) {
      float* y_co = ys + (co * l.batch + b0) * out_plane;
      if (!out_used[co]) {
        std::fill(y_co, y_co + n * out_plane, 0.0f);
        continue;
      }
      if (in_place) {
        for (int64_t b = 0; b < n; ++b)
          RowsInPlace(l, taps.data() + begin[co], tap_values.data() + begin[co],
                      begin[co + 1] - begin[co], xs, b0 + b, y_co + b * out_plane,
                      inputs.data(), vals.data(), used.data());
        continue;
      }
      for (int64_t t = begin[co]; t < begin[co + 1]; ++t)
        inputs[t] = xq.data() + taps[t].plane * l.stride() + taps[t].shift;
      const float* const* first = inputs.data() + begin[co];
      const float* first_value = tap_values.data() + begin[co];
      const int64_t count = begin[co + 1] - begin[co];
      if (l.wo >= kVector) {  // Row by row, straight into y (no padded columns computed).
        for (int64_t b = 0; b < n; ++b)
          for (int64_t h = 0; h < l.ho; ++h)
            SumRows(first, first_value, count, b * l.plane + h * l.wq, l.wo,
                    y_co + (b * l.ho + h) * l.wo);
        continue;
      }
      // Narrow rows: whole segments of the padded grid, then cropped.
      SumShifted(first, first_value, count, CeilDiv(n * l.plane, kSegment) * kSegment,
                 out.data());
      for (int64_t b = 0; b < n; ++b)
        for (int64_t h = 0; h < l.ho; ++h)
          Copy(out.data() + b * l.plane + h * l.wq, y_co + (b * l.ho + h) * l.wo, l.wo);
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                    ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> indices,
                    ffi::BufferR0<ffi::S32> count, ffi::Buffer<ffi::F32> dy,
                    ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dvalues,
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
  UsedChannels(taps, l, &in_used, &out_used);
  UsedChannels(by_plane, l, &in_grad_used, &unused);
  const std::vector<float> tap_values = Values(by_plane, v);
  float* xs = const_cast<float*>(x.typed_data());  // only read (CopyPhases to phases)
  const float* dys = dy.typed_data();
  float* dxs = dx->typed_data();
  // Output gradients sit after `slack` zeros, so that shifting back stays in the buffer.
  const int64_t dy_stride = l.slack + l.grid;
  const int64_t in_plane = l.height * l.width, out_plane = l.ho * l.wo;
  std::vector<float> per_block(l.blocks * used);

  ParallelFor(pool, l.blocks, [&](int64_t block) {
    const int64_t b0 = block * l.images, n = std::min(l.images, l.batch - b0);
    const int64_t length = CeilDiv(n * l.plane, kSegment) * kSegment;
    thread_local std::vector<float> xq, dyq, dxq;
    thread_local std::vector<const float*> inputs;
    inputs.resize(by_plane.size());
    xq.resize(l.cin * l.phases * l.stride());
    dyq.resize(l.cout * dy_stride);
    dxq.resize(l.cin * l.phases * l.grid);
    for (int64_t ci = 0; ci < l.cin; ++ci)
      if (in_used[ci]) CopyPhases(true, xs, l, ci, b0, n, xq.data(), l.stride());
    for (int64_t co = 0; co < l.cout; ++co) {
      if (!out_used[co]) continue;
      float* grad = dyq.data() + co * dy_stride;
      Zero(grad, l.slack);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t h = 0; h < l.hq; ++h) {
          float* row = grad + l.slack + b * l.plane + h * l.wq;
          if (h < l.ho) Copy(dys + ((co * l.batch + b0 + b) * l.ho + h) * l.wo, row, l.wo);
          Zero(row + (h < l.ho ? l.wo : 0), h < l.ho ? l.wq - l.wo : l.wq);
        }
      Zero(grad + l.slack + n * l.plane, l.grid - n * l.plane);
    }
    for (const Tap& t : taps) {
      const float* __restrict__ in = xq.data() + t.plane * l.stride() + t.shift;
      const float* __restrict__ grad = dyq.data() + t.co * dy_stride + l.slack;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t p = 0; p < length; ++p) sum += in[p] * grad[p];
      per_block[block * used + t.k] = sum;
    }
    for (int64_t ci = 0; ci < l.cin; ++ci) {
      if (!in_grad_used[ci]) {
        float* dx_ci = dxs + (ci * l.batch + b0) * in_plane;
        std::fill(dx_ci, dx_ci + n * in_plane, 0.0f);
        continue;
      }
      for (int64_t p = ci * l.phases; p < (ci + 1) * l.phases; ++p) {
        for (int64_t t = begin[p]; t < begin[p + 1]; ++t)
          inputs[t] = dyq.data() + by_plane[t].co * dy_stride + l.slack - by_plane[t].shift;
        SumShifted(inputs.data() + begin[p], tap_values.data() + begin[p],
                   begin[p + 1] - begin[p], length, dxq.data() + p * l.grid);
      }
      CopyPhases(false, dxs, l, ci, b0, n, dxq.data(), l.grid);
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
                                               .Ret<ffi::Buffer<ffi::F32>>()
                                               .Ret<ffi::Buffer<ffi::F32>>()));
