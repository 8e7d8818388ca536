import SproutCLI

await Sprout.runMain()
