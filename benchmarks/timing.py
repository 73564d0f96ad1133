"""Timing shared by the benchmarks: warm-up, then the median over trials that rotate through
several input sets (so the timing is not of a warm cache), with CUDA events on a GPU; and the
peak memory of one call."""
import os
import platform
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile


def time_call(fn, inputs, trials, warmup, device):
    """(median seconds of fn(input) over ``trials`` calls rotating through ``inputs``, last output)."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times = []
    for i in range(trials):
        current = inputs[i % len(inputs)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            output = fn(current)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            began = time.perf_counter()
            output = fn(current)
            times.append(time.perf_counter() - began)
    return statistics.median(times), output


def peak_bytes(fn, qkv, device):
    """Peak bytes allocated at once during one call, beyond what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(*qkv)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*qkv)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def machine(device):
    """(where the benchmark ran, where its peak memory comes from), for a results file."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(), "torch.cuda.max_memory_allocated"
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    where += f", load average {os.getloadavg()[0]:.1f} at the end"
    return where, "torch.profiler memory events (every allocation and free, in order)"


def device_and_dtype(threads=None):
    """The device a benchmark runs on and its dtype: CUDA in fp16 when there is one, else CPU in
    fp32 with ``threads`` torch threads (torch's default when None)."""
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32
