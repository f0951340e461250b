"""PyTorch's DataLoader doing what `segment bench loader` does, for a side-by-side (tools/bench/loader.sh):
read and decode each image and mask with PIL, a random crop, a random horizontal flip, HWC uint8 to CHW, collate
batches; shuffled, the last batch kept. Prints one JSON line: images/s of each epoch and the mean after the first.
Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision, python3-pil)."""
import argparse, json, os, random, time
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class Pairs(Dataset):
    def __init__(self, root, crop):
        self.images = sorted(os.listdir(os.path.join(root, "images")))
        self.root, self.crop = root, crop

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        name = self.images[i]
        image = np.asarray(Image.open(os.path.join(self.root, "images", name)).convert("RGB"))
        mask = np.asarray(Image.open(os.path.join(self.root, "masks", name)))
        h, w = mask.shape[:2]
        y, x = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
        image, mask = image[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]
        if random.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(mask.copy())


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--data", required=True)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--batch-size", type=int, default=8)
    a.add_argument("--crop", type=int, default=256)
    a.add_argument("--epochs", type=int, default=3)
    o = a.parse_args()
    torch.set_num_threads(1)
    data = Pairs(o.data, o.crop)
    loader = DataLoader(data, batch_size=o.batch_size, shuffle=True, num_workers=o.workers, drop_last=False)
    rates = []
    for _ in range(o.epochs):
        start, n = time.perf_counter(), 0
        for images, masks in loader:
            n += images.shape[0]
        rates.append(n / (time.perf_counter() - start))
    print(json.dumps({"framework": f"pytorch {torch.__version__}", "epochs": rates,
                      "imagesPerSecond": sum(rates[1:]) / max(1, len(rates) - 1)}))


if __name__ == "__main__":
    main()
