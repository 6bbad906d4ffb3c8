module stacksampler.test/pprofagree

go 1.19
