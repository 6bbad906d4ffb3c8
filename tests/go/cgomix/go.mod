module stacksampler.test/cgomix

go 1.19
