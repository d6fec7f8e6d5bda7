// The GPU a process drives (one process per GPU, DESIGN.md §4), its streams, events for
// ordering work across streams, and byte copies between host and device tensors.
//
// Streams (all non-blocking: they never synchronise implicitly with the legacy default
// stream, so a stray library call on stream 0 cannot serialise the step):
//   compute  highest priority: every kernel of the forward/backward/optimizer;
//   side     highest priority: independent compute that overlaps the main chain (e.g. the mHC
//            post/res merge of MLP sublayers), joined back with an Event;
//   comm     default (lowest) priority: NCCL collectives and peer transfers, so communication
//            kernels never hold the SMs that the critical path is waiting for.
// Cross-stream order is always explicit: Event::record on the producer, Event::wait on the
// consumer. No CUDA headers here: host code compiled without nvcc includes this file.
#pragma once
#include <string>

#include "core/stream.h"
#include "core/tensor.h"

namespace bk {

// Number of CUDA devices; 0 (never an error) when there is no driver or no device.
int cuda_device_count();
// The device's name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3").
std::string cuda_device_name(int device);

class DeviceContext {
 public:
  // Selects `device` for the calling thread and creates the streams. At most one context per
  // process at a time; it becomes current() until destroyed.
  explicit DeviceContext(int device);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int device() const { return device_; }
  Stream compute() const { return compute_; }
  Stream side() const { return side_; }
  Stream comm() const { return comm_; }
  // Waits for all work on all three streams; surfaces asynchronous kernel errors.
  void synchronize() const;

  static DeviceContext* current();

 private:
  int device_;
  Stream compute_, side_, comm_;
};

// The default stream: the current context's compute stream, or CUDA's legacy default stream
// (null handle) when there is no context (tests and tools that run everything on stream 0).
Stream default_stream();
// A null Stream means the default stream. Every CUDA entry point (ops, buffers, the
// allocator, events, copies) resolves it, so code that passes Stream{} runs in one stream
// order with the buffers it allocates, with or without a DeviceContext.
inline Stream resolve_stream(Stream s) { return s.handle ? s : default_stream(); }

// A CUDA event (timing disabled unless asked: cheaper to record and wait on).
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(Event&& o) noexcept : handle_(o.handle_) { o.handle_ = nullptr; }
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(Stream s);             // captures the work queued on s so far
  void wait(Stream s) const;         // s's later work starts after the captured work
  void synchronize() const;          // the host waits
  bool done() const;                 // non-blocking query
  float elapsed_ms(const Event& start) const;  // both recorded with timing = true
  void* handle() const { return handle_; }

 private:
  void* handle_ = nullptr;
};

void synchronize(Stream s);
// `waiter`'s later work starts after everything queued on `signaler` so far (one event).
void stream_wait(Stream waiter, Stream signaler);

// Byte copy between tensors of one dtype and element count, any devices (unified addressing
// picks the direction). Asynchronous on `s`; host memory must stay valid until it completes,
// and only pinned host memory makes the copy truly overlap.
void copy_async(Tensor dst, Tensor src, Stream s);
// The same, then waits for s.
void copy_sync(Tensor dst, Tensor src, Stream s = {});

}  // namespace bk
