#!/bin/sh
# The image's entry point. Nothing but options (or nothing at all) means `wyoming-lina serve`
# with them; a wyoming-lina command (serve, download, speak, voice) runs that command; anything
# else runs as given (e.g. `bash`). Where to listen and the data dir come from the defaults and
# the environment (WYOMING_LINA_DATA_DIR=/data), so a mounted config/lina.yaml can change both.
set -e
case "${1:-}" in
    "" | -*) exec wyoming-lina serve "$@" ;;
    serve | download | speak | voice) exec wyoming-lina "$@" ;;
    *) exec "$@" ;;
esac
