module stacksampler.test/leaf

go 1.19
