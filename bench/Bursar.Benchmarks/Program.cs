using BenchmarkDotNet.Running;

if (args.Length > 0 && args[0] == "semantic-percentiles")
{
    Bursar.Benchmarks.SemanticPercentiles.Run();
    return;
}
if (args.Length > 0 && args[0] == "router-percentiles")
{
    Bursar.Benchmarks.RouterBenchmarks.Percentiles();
    return;
}
if (args.Length > 0 && args[0] == "report-scale")
{
    await Bursar.Benchmarks.ReportScale.RunAsync(args);
    return;
}
if (args.Length > 0 && args[0] == "postgres-scale")
{
    await Bursar.Benchmarks.PostgresScale.RunAsync(args);
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(Bursar.Benchmarks.HotPathBenchmarks).Assembly).Run(args);
