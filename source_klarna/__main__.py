from source_klarna.run import run

if __name__ == "__main__":
    run()
