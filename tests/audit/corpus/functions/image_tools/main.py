import io

import cv2
import numpy as np
import requests
from bs4 import BeautifulSoup
from PIL import Image


def first_image_edges(request):
    """Downloads the first image of a page and returns its edge count."""
    page = requests.get(request.args["url"], timeout=10)
    soup = BeautifulSoup(page.text, "html.parser")
    img = soup.find("img")
    raw = requests.get(img["src"], timeout=10).content
    picture = Image.open(io.BytesIO(raw)).convert("L")
    edges = cv2.Canny(np.array(picture), 100, 200)
    return {"edges": int(np.count_nonzero(edges))}
