"""The training image: content-hash tag, build, push only what is missing, or check a prebuilt `image.uri`.

`ensure` is the step the pipeline calls; `build`, `push` and `registry` are its parts; `wording` says what
went wrong. Import from here: `from submitter.image import ensure_image, BuildRequest, engine`.
"""

from submitter.image.build import BuildRequest
from submitter.image.ensure import ImageResult, check_prebuilt, engine, ensure_image, parse_reference

__all__ = ["BuildRequest", "ImageResult", "check_prebuilt", "engine", "ensure_image", "parse_reference"]
