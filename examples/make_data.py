"""Write the examples' small datasets (committed, so this only runs again to change them).

    python examples/make_data.py

shapes/images/<class>/*.png: 16x16 grayscale drawings of circles, squares and triangles, 24 of each,
with random size, position and noise. houses/houses.csv: 240 made-up house sales whose price
follows a known formula plus noise (a regression). tiny-graphs/nodes.csv and edges.csv: 120 small coloured graphs
whose class is whether their edges join nodes of one colour (graph classification from a CSV pair). The text corpus (tiny-text/corpus.txt) is
a copy of part of docs/architecture.md and is not written here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from agentarch.tasks.graphsets import colour_graphs, graph_of_nodes

HERE = Path(__file__).parent
SHAPES = ("circle", "square", "triangle")


def draw(shape: str, rng: np.random.Generator) -> Image.Image:
    """One 16x16 drawing: a filled shape of random size and place on a noisy background."""
    image = Image.new("L", (16, 16), 0)
    pen = ImageDraw.Draw(image)
    r = int(rng.integers(3, 7))
    cx, cy = (int(v) for v in rng.integers(r, 16 - r, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        pen.ellipse(box, fill=255)
    elif shape == "square":
        pen.rectangle(box, fill=255)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=255)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 20, (16, 16))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="L")


def write_shapes(rng: np.random.Generator, per_class: int = 24) -> None:
    for shape in SHAPES:
        folder = HERE / "shapes" / "images" / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(shape, rng).save(folder / f"{i:03d}.png", optimize=True)


def write_houses(rng: np.random.Generator, rows: int = 240) -> None:
    """price (thousands) = 50 + 1.8 * area + 15 * rooms - 0.6 * age + the district's premium + noise."""
    premium = {"centre": 80.0, "harbour": 40.0, "suburb": 0.0}
    with open(HERE / "houses" / "houses.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["area", "rooms", "age", "district", "price"])
        for _ in range(rows):
            area = float(rng.uniform(30, 200))
            rooms = int(rng.integers(1, 7))
            age = int(rng.integers(0, 80))
            district = str(rng.choice(list(premium)))
            price = 50 + 1.8 * area + 15 * rooms - 0.6 * age + premium[district] + rng.normal(0, 10)
            out.writerow([f"{area:.1f}", rooms, age, district, f"{price:.1f}"])


def write_graphs(seed: int, graphs: int = 120) -> None:
    """Graphs of 6 to 12 nodes in 3 colours (3 noisy indicator features and 1 of noise alone), labelled "gathers" when
    nine in ten of their edges join nodes of one colour and "avoids" when none does; each graph's split is given."""
    made = colour_graphs(graphs, 3, (6, 12), 3.0, (0.9, 0.0), seed)
    owner = graph_of_nodes(made.ptr)
    folder = HERE / "tiny-graphs"
    folder.mkdir(exist_ok=True)
    with open(folder / "nodes.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "red", "green", "blue", "noise", "label", "split", "graph_id"])
        for node, g in enumerate(owner):
            split = ("train", "train", "train", "val", "test")[g % 5]
            label = ("gathers", "avoids")[made.y[g]]
            out.writerow([f"n{node}", *(f"{v:.3f}" for v in made.x[node, :4]), label, split, f"g{g}"])
    with open(folder / "edges.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["src", "dst"])
        out.writerows([f"n{a}", f"n{b}"] for a, b in made.edge_index.T)


if __name__ == "__main__":
    write_shapes(np.random.default_rng(0))
    (HERE / "houses").mkdir(exist_ok=True)
    write_houses(np.random.default_rng(1))
    write_graphs(2)
