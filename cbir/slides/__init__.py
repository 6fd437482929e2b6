"""Slide reading: one interface (`Slide`), backends for OpenSlide, PIL and arrays."""

from cbir.slides.base import Slide, SlideInfo
from cbir.slides.open import open_slide

__all__ = ["Slide", "SlideInfo", "open_slide"]
