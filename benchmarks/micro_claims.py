#!/usr/bin/env python
"""The speed claims the code and docs make about our own building blocks, each measured against
its baseline in one run, on the same bytes, and printed as a ratio (the claim's place named):

  tar        shard MB/s of the loader's tar reader (pipeline/loading/tarsamples.py ``read_tar``,
             pipeline/lake/tario.py) vs webdataset's ``tarfile_to_samples``, over the shards
             ``run_preprocess`` wrote from the DAVIS root (pipeline/loading/dataset.py)
  tarwrite   us per member of the shard writer (pipeline/lake/tarwrite.py ``TarWriter.add``) vs
             ``tarfile.addfile``, the same members into memory
  writeback  ms of the fsync that closes an 8 MiB file written through ``WriteBehindFile``
             (pipeline/core/writeback.py) vs written plainly, both paced at ``--write-mb-s``
             (the preprocessing job's rate); the write time of both too
  png        ms per mask of the PNG row decoder (pipeline/core/png_rows.py) vs Pillow, OpenCV
             (libpng) and libspng (pyspng, when installed), on the root's 8-bit grey masks
             (DAVIS-2016: Sub rows; synthetic masks are re-encoded so) and on the same masks
             saved as palette PNGs by Pillow (None rows, as DAVIS-2017's); and the inflate of
             their IDAT stream, zlib-ng vs zlib; libspng vs OpenCV vs Pillow on the same masks
             re-encoded with Paeth rows (mask_png's other grey PNGs) (pyproject.toml,
             pipeline/core/mask_png.py)
  jpeg       ms per frame of torchvision's decoder (pipeline/loading/decode.py ``decode_jpeg``) vs
             PIL, on the root's JPEG frames
  gif        ms per 480p frame of Pillow's fast octree quantizer (pipeline/inference/video.py) vs
             its default median cut, the same frames, no dithering

Each contender runs ``--repeats`` times round-robin, single-threaded (torch and OpenCV at one
thread); the best run gives the figure, the median is printed too. Target: each of our choices is
faster than its baseline (ratio > 1); the claimed figure is printed beside the measured one.

    python benchmarks/micro_claims.py --davis-root /data/DAVIS
    python benchmarks/micro_claims.py --quick --json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np

from _common import (add_data_args, add_run_args, davis_source, run_and_report, sequences,
                     SPLITS)  # the repo is put on sys.path there

CLAIMS = {  # what the code and docs say; the benchmark prints the measured figure beside it
    "tar": "3.5-4.8x the byte rate of tarfile_to_samples",
    "tarwrite": "1.3-1.7x tarfile.addfile's speed",
    "writeback": "fsync of an 8 MB file 5.1 -> 0.7 ms (one host), 1.15-1.44x (2-core VM)",
    "png": "6.7-6.9x Pillow's speed (DAVIS-2016, Sub), 33-46x (palette, None)",
    "jpeg": "torchvision 1.5-1.9x PIL's speed",
    "gif": "fast octree ~95x faster than median cut at 480p",
}


def timed(fn, items, repeats: int) -> dict:
    """Seconds per item of ``fn(item)`` over ``items``: best and median of ``repeats`` passes."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for it in items:
            fn(it)
        runs.append((time.perf_counter() - t) / len(items))
    return {"best": min(runs), "median": statistics.median(runs)}


def compare(contenders: dict, items, repeats: int) -> dict:
    """Round-robin timing of several ``fn(item)``; {name: {"best", "median"}} in seconds."""
    runs: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(timed(fn, items, 1)["best"])
    return {k: {"best": min(v), "median": statistics.median(v)} for k, v in runs.items()}


def ms(d: dict) -> dict:
    return {k: round(v * 1e3, 4) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# the sections


def tar_section(shards: list[Path], repeats: int) -> dict:
    import webdataset as wds

    from pipeline.loading.tarsamples import read_tar

    total = sum(p.stat().st_size for p in shards)
    urls = [str(p) for p in shards]

    def ours(url):
        for _ in read_tar(url):
            pass

    def theirs(url):
        for _ in wds.tarfile_to_samples()(iter([{"url": url}])):
            pass

    for u in urls:  # warm the page cache
        Path(u).read_bytes()
    t = compare({"read_tar": ours, "tarfile_to_samples": theirs}, urls, repeats)
    rate = {k: total / 1e6 / (v["best"] * len(urls)) for k, v in t.items()}
    return {"shards": len(urls), "mb": round(total / 1e6, 2),
            "mb_per_s": {k: round(v, 1) for k, v in rate.items()},
            "ratio": rate["read_tar"] / rate["tarfile_to_samples"]}


def tarwrite_section(shards: list[Path], repeats: int) -> dict:
    from pipeline.lake.tario import iter_members
    from pipeline.lake.tarwrite import TarWriter

    members = []
    for p in shards:
        with open(p, "rb") as fh:
            members += [(n, d) for n, d in iter_members(fh, lambda _: True)]

    def ours(_):
        with TarWriter(io.BytesIO()) as w:
            for name, data in members:
                w.add(name, data)

    def theirs(_):
        with tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.GNU_FORMAT) as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tf.addfile(info, io.BytesIO(data))

    t = compare({"TarWriter": ours, "tarfile.addfile": theirs}, [None], repeats)
    us = {k: round(v["best"] / len(members) * 1e6, 2) for k, v in t.items()}
    return {"members": len(members), "us_per_member": us,
            "ratio": us["tarfile.addfile"] / us["TarWriter"]}


def writeback_section(tmp: Path, repeats: int, rate_mb_s: float, mib: int = 8) -> dict:
    from pipeline.core.writeback import WriteBehindFile

    chunk = np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    n = (mib << 20) // len(chunk)

    starts = [0]

    def one(behind: bool) -> tuple[float, float]:
        path = tmp / f"writeback_{int(behind)}.bin"
        with open(path, "wb") as f:
            out = WriteBehindFile(f) if behind else f
            t0 = time.perf_counter()
            for i in range(n):  # paced like a writer that builds what it writes
                out.write(chunk)
                wait = t0 + (i + 1) * len(chunk) / (rate_mb_s * 1e6) - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            f.flush()
            t1 = time.perf_counter()
            os.fsync(f.fileno())
            t2 = time.perf_counter()
        starts[0] = getattr(out, "writeback_starts", starts[0])
        path.unlink()
        return t1 - t0, t2 - t1

    runs: dict[str, dict[str, list[float]]] = {k: {"write": [], "fsync": []}
                                               for k in ("write-behind", "plain")}
    for _ in range(repeats):
        for name in runs:
            w, s = one(name == "write-behind")
            runs[name]["write"].append(w)
            runs[name]["fsync"].append(s)
    fig = {k: {part: ms({"best": min(v), "median": statistics.median(v)})
               for part, v in parts.items()} for k, parts in runs.items()}
    return {"file_mib": mib, "rate_mb_s": rate_mb_s, "writeback_starts": starts[0], "ms": fig,
            "ratio": fig["plain"]["fsync"]["best"] / max(fig["write-behind"]["fsync"]["best"],
                                                         1e-6)}


def _idat(data: bytes) -> bytes:
    pos, out = 8, []
    while pos + 12 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IDAT":
            out.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    return b"".join(out)


def png_section(masks: list[bytes], repeats: int) -> dict:
    import cv2
    from PIL import Image

    from pipeline.core.png_rows import decode_simple_png

    try:
        import pyspng
    except ImportError:  # optional here: the row decoder's claim is against Pillow
        pyspng = None
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        zlib_ng = None

    def palette(data: bytes) -> bytes:
        a = np.array(Image.open(io.BytesIO(data)))
        im = Image.fromarray(np.where(a > 0, 1, 0).astype(np.uint8), "L").convert("P")
        im.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    def sub_rows(data: bytes) -> bytes:  # as the DAVIS-2016 release writes masks (synthetic data)
        if decode_simple_png(data) is not None:
            return data
        a = np.array(Image.open(io.BytesIO(data)))
        return cv2.imencode(".png", a, [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB])[1] \
            .tobytes()

    def other_rows(data: bytes) -> bytes:  # Paeth rows: for the general decoders only
        a = np.array(Image.open(io.BytesIO(data)))
        return cv2.imencode(".png", a, [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH])[1] \
            .tobytes()

    general = {
        "Pillow": lambda b: np.array(Image.open(io.BytesIO(b))),
        "OpenCV": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED),
    }
    if pyspng is not None:  # mask_png sends the other 8-bit grey PNGs to libspng
        general["libspng"] = lambda b: pyspng.load(b)
    out = {}
    for kind, items in (("grey", [sub_rows(m) for m in masks]),
                        ("palette", [palette(m) for m in masks]),
                        ("grey-other", [other_rows(m) for m in masks])):
        fast = kind != "grey-other"
        assert all((decode_simple_png(m) is not None) == fast for m in items), kind
        first = np.array(Image.open(io.BytesIO(items[0])))
        if fast:
            assert np.array_equal(decode_simple_png(items[0])[0], first), "png_rows != Pillow"
        contenders = ({"png_rows": decode_simple_png} if fast else {}) | {
            k: f for k, f in general.items() if k != "libspng" or kind != "palette"}
        t = compare(contenders, items, repeats)
        row = {"ms": {k: ms(v) for k, v in t.items()},
               "ratio_opencv_pillow": t["Pillow"]["best"] / t["OpenCV"]["best"]}
        if "libspng" in t:
            row["ratio_libspng_opencv"] = t["OpenCV"]["best"] / t["libspng"]["best"]
        if fast:
            row["ratio_pillow"] = t["Pillow"]["best"] / t["png_rows"]["best"]
            streams = [_idat(m) for m in items]
            inflate = {"zlib": zlib.decompress}
            if zlib_ng is not None:
                inflate["zlib-ng"] = zlib_ng.decompress
            ti = compare(inflate, streams, repeats)
            row["inflate_ms"] = {k: ms(v) for k, v in ti.items()}
            if "zlib-ng" in ti:
                row["ratio_inflate"] = ti["zlib"]["best"] / ti["zlib-ng"]["best"]
        out[kind] = row
    out["ratio"] = min(out["grey"]["ratio_pillow"], out["palette"]["ratio_pillow"])
    return out


def jpeg_section(frames: list[bytes], repeats: int) -> dict:
    from PIL import Image

    from pipeline.loading.decode import decode_jpeg

    def pil(b):
        with Image.open(io.BytesIO(b)) as im:
            return np.array(im.convert("RGB"))

    assert np.array_equal(decode_jpeg(frames[0]).permute(1, 2, 0).numpy(), pil(frames[0]))
    t = compare({"torchvision": decode_jpeg, "PIL": pil}, frames, repeats)
    return {"frames": len(frames), "ms": {k: ms(v) for k, v in t.items()},
            "ratio": t["PIL"]["best"] / t["torchvision"]["best"]}


def gif_section(frames: list[bytes], repeats: int) -> dict:
    from PIL import Image

    imgs = [Image.open(io.BytesIO(b)).convert("RGB") for b in frames]
    q = Image.Quantize
    t = compare({
        "fast octree": lambda im: im.quantize(colors=256, method=q.FASTOCTREE,
                                              dither=Image.Dither.NONE),
        "median cut": lambda im: im.quantize(colors=256, method=q.MEDIANCUT,
                                             dither=Image.Dither.NONE),
    }, imgs, repeats)
    return {"frames": len(imgs), "size": list(imgs[0].size), "ms": {k: ms(v) for k, v in t.items()},
            "ratio": t["median cut"]["best"] / t["fast octree"]["best"]}


# ----------------------------------------------------------------------------------------------
# the run


def run(args, tmp: Path) -> dict:
    import cv2
    import torch

    from pipeline.lake.preprocess import PreprocessConfig, run_preprocess

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    src, what = davis_source(args.davis_root, tmp, args.synthetic,
                             n_frames=8 if args.quick else 50)
    seqs = sequences(src)
    jpgs = [p.read_bytes() for s in seqs for p in sorted((src / "JPEGImages" / "480p" / s).glob(
        "*.jpg"))]
    pngs = [p.read_bytes() for s in seqs for p in sorted((src / "Annotations" / "480p" / s).glob(
        "*.png"))]
    n = 4 if args.quick else args.items
    jpgs, pngs = jpgs[:: max(1, len(jpgs) // n)][:n], pngs[:: max(1, len(pngs) // n)][:n]
    run_preprocess(PreprocessConfig("davis2016", src, tmp / "shards", splits=list(SPLITS),
                                    progress=False))
    shards = sorted((tmp / "shards").rglob("*.tar"))
    r = args.repeats
    sections = {
        "tar": lambda: tar_section(shards, r),
        "tarwrite": lambda: tarwrite_section(shards, r),
        "writeback": lambda: writeback_section(tmp, r, args.write_mb_s),
        "png": lambda: png_section(pngs, r),
        "jpeg": lambda: jpeg_section(jpgs, r),
        "gif": lambda: gif_section(jpgs[: 2 if args.quick else 6], r),
    }
    results = {k: f() for k, f in sections.items() if k in args.only}
    return {"benchmark": "micro_claims", "data": what, "repeats": r, "threads": args.threads,
            "results": results, "claims": {k: CLAIMS[k] for k in results},
            "ratios": {k: v["ratio"] for k, v in results.items()},
            "pass": {k: v["ratio"] > 1.0 for k, v in results.items()},
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def print_table(r: dict) -> None:
    print(f"data: {r['data']}; best of {r['repeats']}, {r['threads']} thread(s)")
    res = r["results"]
    if "tar" in res:
        x = res["tar"]
        print(f"tar        {x['shards']} shards, {x['mb']} MB: MB/s {x['mb_per_s']}")
    if "tarwrite" in res:
        x = res["tarwrite"]
        print(f"tarwrite   {x['members']} members: us/member {x['us_per_member']}")
    if "writeback" in res:
        for k, v in res["writeback"]["ms"].items():
            print(f"writeback  {k:<13} write {v['write']['best']:.2f} ms, fsync "
                  f"{v['fsync']['best']:.2f} ms (median {v['fsync']['median']:.2f})")
    if "png" in res:
        for kind in ("grey", "palette", "grey-other"):
            x = res["png"][kind]
            print(f"png {kind:<10}: ms/mask " + ", ".join(f"{k} {v['best']:.3f}"
                                                         for k, v in x["ms"].items())
                  + "; inflate " + ", ".join(f"{k} {v['best']:.3f}"
                                              for k, v in x.get("inflate_ms", {}).items()))
            extra = {k: round(v, 2) for k, v in x.items() if k.startswith("ratio") and v}
            print(f"            {extra}")
    for name in ("jpeg", "gif"):
        if name in res:
            x = res[name]
            print(f"{name:<10} {x['frames']} frames: ms/frame " + ", ".join(
                f"{k} {v['best']:.2f} (median {v['median']:.2f})" for k, v in x["ms"].items()))
    print()
    print(f"{'claim':<11}{'ratio':>8}  {'target':<8}{'result':<8}what the code says")
    for k, v in r["ratios"].items():
        ok = "PASS" if r["pass"][k] else "FAIL"
        print(f"{k:<11}{v:>7.2f}x  {'> 1x':<8}{ok:<8}{r['claims'][k]}")
    print(f"load average {r['load_average']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--items", type=int, default=20, help="frames and masks timed per section")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write-mb-s", type=float, default=700.0,
                   help="writeback: the rate the file is written at (the preprocessing job's "
                        "MB/s at one worker)")
    p.add_argument("--only", nargs="+", choices=list(CLAIMS), default=list(CLAIMS),
                   help="sections to run")
    add_run_args(p, "4 frames/masks, 2 repeats, 8-frame synthetic sequences")
    add_data_args(p)
    args = p.parse_args(argv)
    args.repeats = 2 if args.quick else args.repeats
    return run_and_report(args, run, print_table, "micro_claims_")


if __name__ == "__main__":
    sys.exit(main())
