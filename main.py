# The entry point Airbyte's Python connector images run: `python /airbyte/integration_code/main.py`.
# It is the `source-klarna` console script (source_klarna/run.py), nothing more.
from source_klarna.run import run

if __name__ == "__main__":
    run()
