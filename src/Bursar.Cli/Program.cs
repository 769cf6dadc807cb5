using System.CommandLine;
using Bursar.Cli.Commands;

var root = new RootCommand("Bursar: an LLM cost gateway that meters every call, applies the cost levers and proves each dollar saved.");
root.Options.Add(CliOptions.DataDir);
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
return await root.Parse(args).InvokeAsync();
