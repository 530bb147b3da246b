import sys

from pangea_p2p.node.cli import main

sys.exit(main())
