"""Timing shared by the benchmarks: warm-up, then the median over trials that rotate through
several input sets (so the timing is not of a warm cache), with CUDA events on a GPU."""
import statistics
import time

import torch


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
