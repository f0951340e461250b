namespace Segmentation.Cli;

internal static class Program
{
    private static int Main(string[] args) => Cli.Run(args, Console.Out, Console.Error,
        outIsTerminal: !Console.IsOutputRedirected, errIsTerminal: !Console.IsErrorRedirected);
}
