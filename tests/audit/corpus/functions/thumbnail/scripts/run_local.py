"""Runs the function on a local image; not deployed (see .gcloudignore)."""

import main

SAMPLE = "/home/developer/Pictures/zombie.jpg"

if __name__ == "__main__":
    main.blur_offensive_images({"bucket": "local", "name": SAMPLE}, None)
