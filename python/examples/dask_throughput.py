#!/usr/bin/env python3
"""Images per second scored by skipganomaly.distributed.score_bag on a LocalCluster of 1, 2, ...
worker processes (one thread each), against one process scoring the same files in a loop.

    PYTHONPATH=build/python python3 python/examples/dask_throughput.py --images 400 --workers 1,2

Writes the first --images MNIST test digits (data/mnist) as PNG files into a temporary folder,
trains a model of the given size for one epoch (the weights do not change the speed), then
times each configuration --repeats times after a warm-up that loads the model on every worker,
and prints a Markdown table of the best and median figures. Every run's scores are checked
against the single process's, bit for bit.
"""

import argparse
import gzip
import logging
import os
import statistics
import tempfile
import time

import numpy as np

import skipganomaly
from skipganomaly.distributed import detector_for, score_bag, score_files

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mnist_test_images(count):
    """(count, 28, 28) uint8: the first count images of MNIST's test set (an IDX file)."""
    with gzip.open(os.path.join(REPOSITORY, "data", "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        header = np.frombuffer(f.read(16), ">u4")
        assert header[0] == 2051, "not an IDX image file"
        n, rows, cols = (int(v) for v in header[1:])
        pixels = np.frombuffer(f.read(min(count, n) * rows * cols), np.uint8)
    return pixels.reshape(-1, rows, cols)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", default="1,2", help="worker process counts, comma-separated")
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the paths")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as folder:
        images = mnist_test_images(args.images)
        paths = []
        for i, image in enumerate(images):
            paths.append(os.path.join(folder, f"{i:05d}.png"))
            skipganomaly.save_png(paths[-1], image)
        model = os.path.join(folder, "model.safetensors")
        trainer = skipganomaly.Detector(image_size=args.image_size, channels=1, epochs=1, batch_size=16)
        trainer.fit(images[:80])
        trainer.save(model)

        rows = []
        # One process, one CPU thread: the loop a worker runs, without Dask.
        skipganomaly.set_cpu_threads(1)
        detector_for(model)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            expected = score_files(paths, model)
            times.append(time.perf_counter() - start)
        rows.append(("1 process, no Dask", times))
        skipganomaly.set_cpu_threads(0)

        for workers in (int(w) for w in args.workers.split(",")):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
                client.wait_for_workers(workers, timeout=60)
                client.run(lambda path: detector_for(path).is_trained, model)  # warm-up: each worker loads the model
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    got = score_bag(paths, model, npartitions=args.partitions).compute()
                    times.append(time.perf_counter() - start)
                    assert got == expected, "scores differ from the single process's"
                    time.sleep(1)  # the scheduler forgets these results before the same keys come again
            rows.append((f"Dask, {workers} worker process(es) x 1 thread", times))

    print(f"{args.images} MNIST test images (28 x 28 PNG), isize {args.image_size}, 1 channel, "
          f"{args.partitions} partitions, best and median of {args.repeats}; scores equal to the single process's")
    print()
    print("| configuration | images/s (best) | images/s (median) |")
    print("|---|---:|---:|")
    for name, times in rows:
        print(f"| {name} | {args.images / min(times):.0f} | {args.images / statistics.median(times):.0f} |")


if __name__ == "__main__":
    main()
