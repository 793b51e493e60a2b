" touchwire: reload the guest's app when a file is saved. Vim 8.2+ and Neovim.
" After each write of a matching file it runs `touchwire send --wait --path FILE` as a job, so a
" save never waits on the network, and shows the result in one line ("reloaded app in 412 ms",
" or the failure; the app's traceback goes to :messages). Never a prompt.
" See :help touchwire.

if exists('g:loaded_touchwire')
  finish
endif
let g:loaded_touchwire = 1

let g:touchwire_command = get(g:, 'touchwire_command', 'touchwire')
let g:touchwire_enabled = get(g:, 'touchwire_enabled', 1)
let g:touchwire_patterns = get(g:, 'touchwire_patterns', '*.py')

" Shows the result in one line ("reloaded app on HOST in 412 ms", or what failed), cut to fit
" the command line so that it never asks to press ENTER. A failure's whole output (the app's
" traceback, then the line that names the file and line) goes to :messages whole.
function! s:Report(lines, status) abort
  let l:lines = filter(copy(a:lines), 'v:val !=# ""')
  if empty(l:lines)
    if a:status == 0
      return
    endif
    let l:lines = ['touchwire: exited with status ' . a:status]
  endif
  let l:text = l:lines[-1]
  let l:width = &columns - 12
  let l:cut = strdisplaywidth(l:text) > l:width ? strcharpart(l:text, 0, l:width) . '…' : l:text
  if a:status == 0
    echomsg l:cut
    return
  endif
  " Each line goes to :messages (`silent echomsg` would record nothing); the redraw after
  " each keeps them from piling up into a hit-enter prompt. Then the last line is shown, cut.
  for l:line in l:lines
    echomsg l:line
    redraw
  endfor
  echohl WarningMsg
  echo l:cut
  echohl None
endfunction

function! s:NvimExit(job, status, event) dict abort
  call s:Report(self.stderr, a:status)
endfunction

" Runs `touchwire send --wait [--path FILE]` in the background: the guest answers once the app
" is back (when it has a ready check) or at once.
function! s:Send(path) abort
  let l:argv = [g:touchwire_command, 'send', '--wait']
  if a:path !=# ''
    let l:argv += ['--path', a:path]
  endif
  if has('nvim')
    call jobstart(l:argv, {'stderr_buffered': v:true, 'stdout_buffered': v:true, 'on_exit': function('s:NvimExit')})
  elseif exists('*job_start')
    let l:job = {'stderr': []}
    function! l:job.err(channel, line) dict abort
      call add(self.stderr, a:line)
    endfunction
    function! l:job.exit(job, status) dict abort
      " stderr may still be buffered when the process has ended: take the rest first.
      let l:channel = job_getchannel(a:job)
      while ch_status(l:channel, {'part': 'err'}) ==# 'buffered'
        call add(self.stderr, ch_read(l:channel, {'part': 'err'}))
      endwhile
      call s:Report(self.stderr, a:status)
    endfunction
    call job_start(l:argv, {'in_io': 'null', 'out_io': 'null', 'err_mode': 'nl',
          \ 'err_cb': l:job.err, 'exit_cb': l:job.exit})
  else
    echohl WarningMsg | echomsg 'touchwire: needs Vim 8.2+ (+job) or Neovim' | echohl None
  endif
endfunction

function! s:OnWrite(path) abort
  if g:touchwire_enabled
    call s:Send(a:path)
  endif
endfunction

function! s:Toggle() abort
  let g:touchwire_enabled = !g:touchwire_enabled
  echomsg 'touchwire: ' . (g:touchwire_enabled ? 'on' : 'off')
endfunction

command! TouchwireReload call s:Send('')
command! TouchwireToggle call s:Toggle()

augroup touchwire
  autocmd!
  execute 'autocmd BufWritePost ' . g:touchwire_patterns . ' call s:OnWrite(expand("<afile>:p"))'
augroup END
