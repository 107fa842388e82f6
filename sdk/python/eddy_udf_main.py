"""The module componentize-py builds: the user's `udf.py` registers its functions, and the
SDK's `Scalar` serves them. `eddy udf build` puts the UDF's directory on the path."""

import udf  # noqa: F401  (importing it runs its @udf decorators)
from eddy_udf import Scalar  # noqa: F401  (the export componentize-py looks for)
