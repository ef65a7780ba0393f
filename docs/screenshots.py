"""Screenshots of the app, one per tab, in docs/ (headless Debian Chromium, see tests/browser.py).

    python docs/screenshots.py                      # the default model (what `python app.py` serves)
    python docs/screenshots.py --model outputs/quickstart

Writes docs/screenshot_app.png (the one-task tab, an example answered) and docs/screenshot_app_all_tasks.png (the
all-tasks tab, a pair of sentences through every pair task).
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from tests.browser import GradioPage, chromium  # noqa: E402

SHOTS = {"one_task": ROOT / "docs" / "screenshot_app.png", "all_tasks": ROOT / "docs" / "screenshot_app_all_tasks.png"}


def take(model: str | None = None, example: int = 0, size=(1280, 1500)) -> list[Path]:
    """Serve ``model`` (default: the default model), answer example ``example`` of the one-task tab and the
    all-tasks tab's pair example, and save a screenshot of each tab."""
    demo = app.build_demo(model)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        with chromium(*size) as driver:
            page = GradioPage(driver, demo.local_url)
            page.example_rows()[example].click()
            page.settle()
            page.click("Predict")
            page.wait(
                lambda: "Confidence" in driver.page_source or "no confidence cue" in driver.page_source,
                "no answer shown",
            )
            page.settle()
            driver.save_screenshot(str(SHOTS["one_task"]))
            page.click("All tasks at once")
            page.wait(lambda: ("Text", "") in page.textboxes(), "the all-tasks tab did not open")
            page.example_rows()[-1].click()  # the pair example: every pair task
            page.settle()
            page.click("Run all compatible tasks")
            page.wait(lambda: "%" in driver.page_source.split("Answers")[-1], "no answers shown")
            page.settle()
            driver.save_screenshot(str(SHOTS["all_tasks"]))
    finally:
        demo.close()
    return list(SHOTS.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the default model)")
    parser.add_argument("--example", type=int, default=0, help="which example of the one-task tab to answer")
    args = parser.parse_args(argv)
    try:
        paths = take(args.model, args.example)
    except (app.CheckpointNotFoundError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
