"""Vehicle label protocols on a generated world: how far the old centre-sampled raster is from the literature's, and
what each costs.

    .venv/bin/python bench/labels.py            # about 20 s

Prints, over the world's key frames on the 200x200 @ 0.5 m raster and the tiny models' 64x64 @ 1 m one: the IoU between the ``cell-center`` and ``lss``
vehicle rasters, their area ratio, and the rasterisation time per sample of each (ratio against ``cell-center``).
The world is a stand-in for nuScenes (occfeat's procedural world), so the agreement figure is indicative.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from occfeat.data import NuScenesBEV
from occfeat.data.labels import LABEL_PROTOCOLS, rasterize_vehicles
from occfeat.synthetic import generate_world
from occfeat.models.geometry import BEVGrid


def main() -> None:
    world = generate_world(tempfile.mkdtemp(), scenes=4, samples_per_scene=5, image_hw=(90, 160), seed=1,
                           progress=False)
    for grid in (BEVGrid(), BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=1.0)):
        data = NuScenesBEV(world.dataroot, world.version, "all", image_size=(32, 64), grid=grid)
        boxes = [data.vehicle_boxes(index) for index in range(len(data))]
        rasters, seconds = {}, {}
        for protocol in LABEL_PROTOCOLS:
            start = time.perf_counter()
            for _ in range(5):
                rasters[protocol] = [rasterize_vehicles(grid, b, protocol=protocol)["vehicle"][0] > 0 for b in boxes]
            seconds[protocol] = (time.perf_counter() - start) / (5 * len(boxes))
        lss, centre = np.stack(rasters["lss"]), np.stack(rasters["cell-center"])
        iou = (lss & centre).sum() / (lss | centre).sum()
        print(f"{len(boxes)} key frames, {sum(map(len, boxes))} vehicle boxes, raster {grid.shape[0]}x{grid.shape[1]} "
              f"@ {grid.resolution} m (procedural world, a stand-in for nuScenes)")
        print(f"  IoU(cell-center, lss) = {iou:.3f}; area cell-center / lss = {centre.sum() / lss.sum():.3f}")
        for protocol in LABEL_PROTOCOLS:
            print(f"  {protocol:>12}: {1e3 * seconds[protocol]:.2f} ms/sample "
                  f"({seconds[protocol] / seconds['cell-center']:.2f}x cell-center)")


if __name__ == "__main__":
    main()
