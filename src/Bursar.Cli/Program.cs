using System.CommandLine;
using Bursar.Cli.Commands;

var root = new RootCommand("Bursar: an LLM cost gateway that meters every call, applies the cost levers and proves each dollar saved.");
root.Options.Add(CliOptions.DataDir);
root.Options.Add(CliOptions.Verbose);
root.Subcommands.Add(ServeCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(ReportCommand.Create());
root.Subcommands.Add(ImportCommand.Create());
root.Subcommands.Add(SimulateCommand.Create());
root.Subcommands.Add(TrainRouterCommand.Create());
root.Subcommands.Add(RoutesCommand.Create());
root.Subcommands.Add(KeysCommand.Create());
root.Subcommands.Add(PricesCommand.Create());
root.Subcommands.Add(BudgetsCommand.Create());
root.Subcommands.Add(BudgetsCommand.CreateLimits());
root.Subcommands.Add(SimulateProviderCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(DbCommand.Create());
root.Subcommands.Add(BatchesCommand.CreateBatches());
root.Subcommands.Add(BatchesCommand.CreateJobs());

var parsed = root.Parse(args);
var configuration = new InvocationConfiguration
{
    // errors are one line naming the problem and the fix (CliErrors); --verbose adds the trace
    EnableDefaultExceptionHandler = false,
    // SIGINT / SIGTERM are the host's: the gateway stops gracefully and drains the ledger before the process exits
    ProcessTerminationTimeout = null,
};
try
{
    return await parsed.InvokeAsync(configuration);
}
catch (Exception e)
{
    return CliErrors.Report(e, parsed.GetValue(CliOptions.Verbose));
}
