from modelfleet.cli import main
import sys
sys.exit(main())
