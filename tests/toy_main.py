"""`python -m mcvd_jax.main` with the toy family (tests/toy_family.py) registered, for the tests
that start the command line itself: several processes, signals.

  python tests/toy_main.py --config=tests/toy_config.py --workdir=W [main's flags ...]
"""


from absl import app

import toy_family
from mcvd_jax import main

if __name__ == "__main__":
  toy_family.register()
  app.run(main.main, flags_parser=main.parse_flags)
