module stacksampler.test/deepwalk

go 1.19
