using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Bursar.Benchmarks.HotPathBenchmarks).Assembly).Run(args);
