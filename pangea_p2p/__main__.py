import sys

from pangea_p2p.cli.main import main

sys.exit(main())
